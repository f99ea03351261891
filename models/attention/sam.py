"""SAM: the point-wise spatial attention module of YOLOv4 (Darknet's ``[sam]`` layer).

Bochkovskiy, Wang, Liao. "YOLOv4: Optimal Speed and Accuracy of Object Detection", 2020,
https://arxiv.org/abs/2004.10934 (section 3.4, Figure 5: "modified SAM"). Reference code:
https://github.com/AlexeyAB/darknet (``src/sam_layer.c``; yolov4-sam-mish.cfg builds it as
a ``[convolutional] batch_normalize=1 size=1 activation=logistic`` layer followed by
``[sam] from=-2``).

CBAM's spatial attention pools over channels and convolves the two maps; YOLOv4 replaces
that with a point-wise convolution, so the gate is 3-D (one value per channel and position):

    gate = logistic(BN(conv1x1(x)))      C -> C, bias-free (BatchNorm supplies the bias)
    out = x * gate

Darknet's ``sam_layer`` is the element-wise product, the sibling of ``scale_channels``
(our ``darknet_se``, which multiplies by a per-channel gate instead). Parameters: C^2 for the
conv + 2C for the BatchNorm; MACs: C^2 per position, as much as a 1x1 conv of the same width.
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn


class SAM(nn.Layer):
    """Point-wise conv + BN + logistic gate, multiplied with the input."""

    min_hw = 1

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2D(channels, channels, 1, bias_attr=False)
        self.bn = nn.BatchNorm2D(channels)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        gate = F.sigmoid(self.bn(self.conv(x)))
        return x * gate
