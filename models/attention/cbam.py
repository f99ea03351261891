"""CBAM: Convolutional Block Attention Module.

Woo, Park, Lee, Kweon. "CBAM: Convolutional Block Attention Module", ECCV 2018.
https://arxiv.org/abs/1807.06521  Reference code: https://github.com/Jongchan/attention-module

Channel attention, then spatial attention, applied in sequence:

    x' = x  * sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))        shared MLP C -> C/r -> C
    out = x' * sigmoid(conv7x7([mean_c(x'), max_c(x')]))

The MLP and the 7x7 conv are bias-free; the spatial conv is not followed by a BatchNorm
(the reference code has one; the paper's formula does not, and it is followed here).

The maxima are taken with adaptive max pooling and ``topk`` rather than ``Tensor.max``: in
paddle 3.3.1 on CPU the backward of a max reduction is ~1000x slower (72 s for one
[2, 256, 56, 56] tensor), which made a ResNet-50 + CBAM step take minutes.
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from ._pool import channel_mean, spatial_mean


class ChannelGate(nn.Layer):
    """sigmoid(MLP(avg) + MLP(max)) over the spatial dimensions, shape [N, C, 1, 1]."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden, bias_attr=False)
        self.fc2 = nn.Linear(hidden, channels, bias_attr=False)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        avg, mx = spatial_mean(x), F.adaptive_max_pool2d(x, 1).flatten(1)
        s = self.fc2(F.relu(self.fc1(avg))) + self.fc2(F.relu(self.fc1(mx)))
        return F.sigmoid(s).unsqueeze([2, 3])


class SpatialGate(nn.Layer):
    """sigmoid(conv7x7([channel mean, channel max])), shape [N, 1, H, W]."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2D(2, 1, kernel_size, padding=kernel_size // 2, bias_attr=False)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        s = paddle.concat([channel_mean(x), paddle.topk(x, 1, axis=1)[0]], axis=1)
        return F.sigmoid(self.conv(s))


class CBAM(nn.Layer):
    """Channel gate, then spatial gate."""

    min_hw = 1

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelGate(channels, reduction)
        self.spatial = SpatialGate(kernel_size)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = x * self.channel(x)
        gate = self.spatial(x)
        return x * gate
