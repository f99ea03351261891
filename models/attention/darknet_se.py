"""Darknet-style squeeze-and-excitation (``[avgpool]``, two ``[convolutional]``, ``[scale_channels]``).

The recipe Darknet cfg files use for SE blocks (e.g. efficientnet_b0.cfg, enet-coco.cfg in
https://github.com/AlexeyAB/darknet), after Hu et al., "Squeeze-and-Excitation Networks",
CVPR 2018, https://arxiv.org/abs/1709.01507. Darknet's convolutional layers with
``batch_normalize=1`` carry no bias; BatchNorm supplies it:

    s = GAP(x)
    s = relu(BN(conv1x1(s)))          C -> C/r
    gate = sigmoid(BN(conv1x1(s)))    C/r -> C
    out = x * gate

The BatchNorms normalise over the batch only (the maps are 1x1), so training with batch
size 1 makes them output their bias: use batches of at least a few images.
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from ._pool import spatial_mean


class DarknetSE(nn.Layer):
    """GAP -> 1x1 conv + BN + ReLU -> 1x1 conv + BN + logistic -> scale channels."""

    min_hw = 1

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.conv1 = nn.Conv2D(channels, hidden, 1, bias_attr=False)
        self.bn1 = nn.BatchNorm2D(hidden)
        self.conv2 = nn.Conv2D(hidden, channels, 1, bias_attr=False)
        self.bn2 = nn.BatchNorm2D(channels)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        s = spatial_mean(x).unsqueeze([2, 3])
        s = F.relu(self.bn1(self.conv1(s)))
        gate = F.sigmoid(self.bn2(self.conv2(s)))
        return x * gate
