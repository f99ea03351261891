"""NAM: normalization-based attention.

Liu, Shao, Wang, Zhang, Hu. "NAM: Normalization-based Attention Module", NeurIPS 2021
Workshop (ImageNet PPML). https://arxiv.org/abs/2111.12419
Reference code: https://github.com/Christian-lyc/NAM

Channel attention read off BatchNorm's scale factors gamma: channels whose gamma is large
vary more and are weighted up.

    out = x * sigmoid(BN(x) * |gamma| / sum|gamma|)

Unlike the reference snippet, gamma is *not* detached (``.data``) from the graph: the
weighting and the sparsity penalty (:func:`models.attention.nam_sparsity_penalty`, added to
the loss by the trainer) both train it.

Optional spatial branch (``spatial_size=H*W``): the paper's "pixel normalization", a
BatchNorm whose channels are the H*W positions, weighted the same way. It needs a fixed
input size, so it is off by default and raises on a map of another size.
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn


def _bn_weighted(bn: nn.Layer, x: paddle.Tensor, axis: int) -> paddle.Tensor:
    """BN(x) with each normalised feature scaled by |gamma| / sum|gamma| (along ``axis``)."""
    g = bn.weight.abs()
    shape = [1] * x.ndim
    shape[axis] = -1
    return bn(x) * (g / g.sum()).reshape(shape)


class NAM(nn.Layer):
    """Channel (and optionally pixel) attention from BatchNorm scale factors."""

    min_hw = 1

    def __init__(self, channels: int, spatial_size: int | None = None) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2D(channels)
        self.spatial_size = spatial_size
        self.pixel_bn = nn.BatchNorm1D(spatial_size) if spatial_size else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = x * F.sigmoid(_bn_weighted(self.bn, x, axis=1))
        if self.pixel_bn is None:
            return x
        n, c, h, w = x.shape
        if h * w != self.spatial_size:
            raise ValueError(f"NAM spatial branch built for {self.spatial_size} positions, got {h}x{w}")
        pixels = x.reshape([n, c, h * w]).transpose([0, 2, 1])  # [N, HW, C]: positions as channels
        gate = F.sigmoid(_bn_weighted(self.pixel_bn, pixels, axis=1)).transpose([0, 2, 1]).reshape([n, c, h, w])
        return x * gate
