"""Squeeze-and-Excitation channel attention.

Hu, Shen, Sun. "Squeeze-and-Excitation Networks", CVPR 2018. https://arxiv.org/abs/1709.01507
Reference code: https://github.com/hujie-frank/SENet (and the widely used PyTorch SELayer,
whose two fully connected layers are bias-free, as here).

    gate = sigmoid(W2 relu(W1 GAP(x))),   W1: C -> C/r,  W2: C/r -> C
    out = x * gate

Parameters: 2 * C * (C // r), i.e. 2*C^2/r when r divides C. The hidden width is at least 1
so that narrow layers (C < r) still work.
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from ._pool import spatial_mean


class SE(nn.Layer):
    """Squeeze (global average pool) and excite (bottleneck MLP + sigmoid) each channel."""

    min_hw = 1

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden, bias_attr=False)
        self.fc2 = nn.Linear(hidden, channels, bias_attr=False)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        s = spatial_mean(x)
        s = self.fc2(F.relu(self.fc1(s)))
        gate = F.sigmoid(s).unsqueeze([2, 3])
        return x * gate
