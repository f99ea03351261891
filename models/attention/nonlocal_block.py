"""Non-local block: self-attention over positions (embedded-Gaussian form).

Wang, Girshick, Gupta, He. "Non-local Neural Networks", CVPR 2018.
https://arxiv.org/abs/1711.07971  Reference code: https://github.com/facebookresearch/video-nonlocal-net

Every position (query) gathers the values of all positions (keys), weighted by a softmax of
their embedded similarity, and the result is added back to the input:

    theta, phi, g = conv1x1(x)              C -> C/2 each (query, key, value), with bias
    w = softmax_j(theta_i . phi_j)          [HW queries, HW keys], no scaling (paper, eq. 3)
    y_i = sum_j w_ij g_j
    out = x + BN(conv1x1(y))                C/2 -> C; the BN scale starts at zero

A freshly built block is therefore exactly the identity (BN(.) = 0 * ... + 0), which is what
inserting it into a pretrained network needs: the network computes what it did before and
the block learns its way in. ``sub_sample=True`` max-pools keys and values 2x2 (ceil mode,
so odd and 1-wide maps work), as the paper does, cutting the key count by ~4.

Cost, for C channels and n = H*W positions (m = n, or ~n/4 with ``sub_sample``):
parameters 2C^2 + 3C/2 + 2C (three C -> C/2 convs with bias, one C/2 -> C conv, BN);
MACs 2C^2 n (the four 1x1 convs) + C n m (theta.phi and w.g); activation memory per image
n*m floats for the weights (and as much again for their gradient), i.e. it grows with
(H*W)^2: 1024 positions = 4 MB per image and attention map in float32. ``max_hw`` (default
1024) is the largest H*W the block takes; host networks skip it on larger maps, as they
skip any module on maps under ``min_hw``. On a 1x1 map the block is a point-wise layer
(a single key), which carries no spatial information: ``min_hw = 2``.
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn


class NonLocal(nn.Layer):
    """Embedded-Gaussian non-local block with a residual connection; identity at init."""

    min_hw = 2

    def __init__(self, channels: int, reduction: int = 2, sub_sample: bool = False,
                 max_hw: int = 1024) -> None:
        super().__init__()
        inner = max(1, channels // reduction)
        self.inner = inner
        self.sub_sample = sub_sample
        self.max_hw = max_hw
        self.theta = nn.Conv2D(channels, inner, 1)
        self.phi = nn.Conv2D(channels, inner, 1)
        self.g = nn.Conv2D(channels, inner, 1)
        self.out = nn.Conv2D(inner, channels, 1, bias_attr=False)
        self.bn = nn.BatchNorm2D(channels, weight_attr=nn.initializer.Constant(0.0))

    def _keys(self, t: paddle.Tensor) -> paddle.Tensor:
        if self.sub_sample:
            t = F.max_pool2d(t, 2, stride=2, ceil_mode=True)
        return t.flatten(2)  # [N, C/2, m]

    def attention(self, x: paddle.Tensor) -> paddle.Tensor:
        """The attention weights [N, HW queries, m keys]; each row sums to 1."""
        q = self.theta(x).flatten(2).transpose([0, 2, 1])  # [N, n, C/2]
        k = self._keys(self.phi(x))                       # [N, C/2, m]
        return F.softmax(paddle.matmul(q, k), axis=-1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        _, _, h, w = x.shape  # the batch may be dynamic (-1) in an exported graph
        v = self._keys(self.g(x)).transpose([0, 2, 1])    # [N, m, C/2]
        y = paddle.matmul(self.attention(x), v)           # [N, n, C/2]
        y = y.transpose([0, 2, 1]).reshape([-1, self.inner, h, w])
        return x + self.bn(self.out(y))

    def extra_macs(self, x_shape) -> int:
        """The two attention matmuls' MACs for input ``x_shape`` (models.summary adds them)."""
        b, _, h, w = x_shape
        m = (-(-h // 2)) * (-(-w // 2)) if self.sub_sample else h * w
        return 2 * b * h * w * m * self.inner

    def extra_repr(self) -> str:
        return f"inner={self.inner}, sub_sample={self.sub_sample}, max_hw={self.max_hw}"
