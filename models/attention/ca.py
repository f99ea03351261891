"""Coordinate Attention.

Hou, Zhou, Feng. "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021.
https://arxiv.org/abs/2103.02907  Reference code: https://github.com/houqb/CoordAttention

Channel attention that keeps position along one axis: the map is average-pooled along W
(giving an H-long profile) and along H (a W-long profile); both profiles share one 1x1 conv
(C -> mid, mid = max(8, C // 32)) + BN + h-swish, are split again, and two 1x1 convs with a
sigmoid turn them into a_h [N, C, H, 1] and a_w [N, C, 1, W]:

    out = x * a_h * a_w
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
        h, w = x.shape[2], x.shape[3]
        x_h = x.mean(axis=3, keepdim=True)  # [N, C, H, 1]
        x_w = x.mean(axis=2, keepdim=True).transpose([0, 1, 3, 2])  # [N, C, W, 1]
        y = F.hardswish(self.bn1(self.conv1(paddle.concat([x_h, x_w], axis=2))))
        y_h, y_w = paddle.split(y, [h, w], axis=2)
        a_h = F.sigmoid(self.conv_h(y_h))  # [N, C, H, 1]
        a_w = F.sigmoid(self.conv_w(y_w.transpose([0, 1, 3, 2])))  # [N, C, 1, W]
        gate = a_h * a_w
        return x * gate
