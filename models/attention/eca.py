"""ECA: efficient channel attention.

Wang, Wu, Zhu, Li, Zuo, Hu. "ECA-Net: Efficient Channel Attention for Deep Convolutional
Neural Networks", CVPR 2020. https://arxiv.org/abs/1910.03151
Reference code: https://github.com/BangguWu/ECANet

A 1-D convolution across the globally pooled channel descriptor replaces SE's MLP. The kernel
size adapts to the channel count: k = |(log2 C + b) / gamma|, rounded up to the next odd
number (b = 1, gamma = 2). The convolution is bias-free, so the module has exactly k
parameters.
"""
from __future__ import annotations

import math

import paddle
import paddle.nn.functional as F
from paddle import nn

from ._pool import spatial_mean


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """The adaptive, odd 1-D kernel size of ECA-Net for ``channels`` channels."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Layer):
    """Sigmoid of a k-tap 1-D conv over the pooled channels scales each channel."""

    min_hw = 1

    def __init__(self, channels: int, gamma: int = 2, b: int = 1) -> None:
        super().__init__()
        k = eca_kernel_size(channels, gamma, b)
        self.conv = nn.Conv1D(1, 1, k, padding=(k - 1) // 2, bias_attr=False)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        s = spatial_mean(x).unsqueeze(1)  # [N, 1, C]: channels become the sequence
        gate = F.sigmoid(self.conv(s)).transpose([0, 2, 1]).unsqueeze(3)  # [N, C, 1, 1]
        return x * gate
