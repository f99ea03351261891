"""Coordinate Attention.

Hou, Zhou, Feng. "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021.
https://arxiv.org/abs/2103.02907  Reference code: https://github.com/houqb/CoordAttention

Channel attention that keeps position along one axis: the map is average-pooled along W
(giving an H-long profile) and along H (a W-long profile); both profiles share one 1x1 conv
(C -> mid, mid = max(8, C // 32)) + BN + h-swish, are split again, and two 1x1 convs with a
sigmoid turn them into a_h [N, C, H, 1] and a_w [N, C, 1, W]:

    out = x * a_h * a_w

Computed for speed on a CPU, same maths: the two poolings are a GEMV with a ones column (mean
along W) and a batched product with a ones row (mean along H), and the gate a_h * a_w is a
batched outer product [H, 1] x [1, W] per channel, multiplied with x element by element.
Paddle 3.3.1's CPU kernels broadcast a [N, C, 1, W] factor ~12x slower than a same-shape
product, and its mean backward is single-threaded; written this way CA's forward + backward
on MobileNetV2's [32, 96, 32, 32] maps takes 24 ms instead of 46 (docs/speed.md).
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn


class CoordAttention(nn.Layer):
    """Direction-aware channel attention from H- and W-pooled profiles."""

    min_hw = 1

    def __init__(self, channels: int, reduction: int = 32, min_mid: int = 8) -> None:
        super().__init__()
        mid = max(min_mid, channels // reduction)
        self.conv1 = nn.Conv2D(channels, mid, 1)
        self.bn1 = nn.BatchNorm2D(mid)
        self.conv_h = nn.Conv2D(mid, channels, 1)
        self.conv_w = nn.Conv2D(mid, channels, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        _, c, h, w = x.shape  # the batch may be dynamic (-1) in an exported graph
        rows = x.reshape([-1, h, w])
        x_h = paddle.scale(paddle.matmul(rows.reshape([-1, w]), paddle.ones([w, 1], x.dtype)),
                           1.0 / w).reshape([-1, c, h, 1])
        x_w = paddle.scale(paddle.matmul(paddle.ones([1, h], x.dtype), rows),
                           1.0 / h).reshape([-1, c, w, 1])  # [N*C, 1, W] laid out as [N, C, W, 1]
        y = F.hardswish(self.bn1(self.conv1(paddle.concat([x_h, x_w], axis=2))))
        y_h, y_w = paddle.split(y, [h, w], axis=2)
        a_h = F.sigmoid(self.conv_h(y_h))  # [N, C, H, 1]
        a_w = F.sigmoid(self.conv_w(y_w))  # [N, C, W, 1], i.e. a_w along W
        gate = paddle.matmul(a_h.reshape([-1, h, 1]), a_w.reshape([-1, 1, w]))
        return x * gate.reshape([-1, c, h, w])
