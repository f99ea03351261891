"""TowerNet: a small VGG/Inception tower with attention slots, as in the reference study.

    b1  BasicConv2d 3x3 stride 2 -> 64,  maxpool
    b2  BasicConv2d 3x3 -> 128,          maxpool
    b3  BasicConv2d 3x3 -> 256,          maxpool, attention
    b4  BasicConv2d 3x3 -> 256,          maxpool, attention
    b5  Inception(256, 64, (64, 128), (16, 32), 32), maxpool, attention,
        Inception(...),                              maxpool, attention,
        Inception(...)
    adaptive average pool to 1x1, Linear(256 -> num_classes)

BasicConv2d is a bias-free conv (the BatchNorm after it has the bias; a conv bias would be
redundant and costs ~23% of a CPU step) + BatchNorm(eps=1e-3) + ReLU. Every maxpool is
3x3/stride 2/padding 1, which maps n to ceil(n/2) and so works down to 1x1 maps; adaptive
pooling before the Linear makes any input from 64 to 512 px valid. Built by
``models.create_model``, its convs and max-pools run on oneDNN on a CPU (backend/onednn.py).

Small maps: at 128 px the last attention slot sees a 1x1 map, at 64 px the last two do. An
attention module declares ``min_hw``, the smallest H*W it carries (SimAM: 2, since its energy
compares a position with the others; the channel attentions: 1), and may declare ``max_hw``
(non-local: 1024 positions, its memory grows with (H*W)^2); ``forward`` skips a slot whose
map is outside that range (``models.attention.attend``), deciding from the static spatial
shape of the tensor. Under
``paddle.jit.to_static`` the default (SOT) mode handles varying input sizes; with
``full_graph=True`` give the InputSpec a fixed H and W.

Multiply-accumulates at 256x256 (convs and the Linear; BN, ReLU, pools and attention
element-wise ops left out), by hand:
    b1 128*128*64*3*9     =  28,311,552
    b2  64*64*128*64*9    = 301,989,888
    b3  32*32*256*128*9   = 301,989,888
    b4  16*16*256*256*9   = 150,994,944
    b5 (8*8+4*4+2*2) * 131,584 per position = 11,053,056
       (1x1 64 + 1x1 64 + 3x3 64->128 + 1x1 16 + 5x5 16->32 + 1x1 32, all from 256 in)
    fc 256*16             =       4,096
    total                 = 794,343,424  (~0.79 GMACs)
"""
from __future__ import annotations

import paddle
from paddle import nn

from backend import onednn

from .attention import attend, create_attention


class BasicConv2d(nn.Sequential):
    """Bias-free conv + BatchNorm(eps=1e-3) + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 data_format: str = "NCHW") -> None:
        super().__init__(
            nn.Conv2D(in_channels, out_channels, kernel_size, stride=stride,
                      padding=kernel_size // 2, bias_attr=False, data_format=data_format),
            nn.BatchNorm2D(out_channels, epsilon=1e-3, data_format=data_format),
            nn.ReLU(),
        )
        self[0].bf16_chain = True  # its output goes only to onednn.batch_norm (backend/onednn.py)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        conv, bn, _ = self  # relu(bn(conv(x))); channels-last on oneDNN: BN and ReLU in one pass
        return onednn.batch_norm(conv(x), bn, relu=True)


class Inception(nn.Layer):
    """GoogLeNet block: 1x1 | 1x1->3x3 | 1x1->5x5 | maxpool->1x1, concatenated on channels."""

    def __init__(self, in_channels: int, c1: int, c2: tuple[int, int], c3: tuple[int, int], c4: int,
                 data_format: str = "NCHW") -> None:
        super().__init__()
        f = {"data_format": data_format}
        self.axis = 1 if data_format == "NCHW" else 3
        self.p1 = BasicConv2d(in_channels, c1, 1, **f)
        self.p2 = nn.Sequential(BasicConv2d(in_channels, c2[0], 1, **f), BasicConv2d(c2[0], c2[1], 3, **f))
        self.p3 = nn.Sequential(BasicConv2d(in_channels, c3[0], 1, **f), BasicConv2d(c3[0], c3[1], 5, **f))
        self.p4 = nn.Sequential(nn.MaxPool2D(3, stride=1, padding=1, **f), BasicConv2d(in_channels, c4, 1, **f))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x1, x2, x3, x4 = onednn.fork(x, 4)  # the branches' gradients summed on oneDNN
        return onednn.concat([self.p1(x1), self.p2(x2), self.p3(x3), self.p4(x4)], axis=self.axis)


def _maxpool(data_format: str) -> nn.MaxPool2D:
    return nn.MaxPool2D(3, stride=2, padding=1, data_format=data_format)


class TowerNet(nn.Layer):
    """TowerNet with ``attention`` (a :func:`create_attention` name or ``"none"``) in its four slots.

    ``data_format="NHWC"`` runs the same network channels-last inside (the input and the
    logits are as always; the parameters and their names are the same): on a CPU with oneDNN
    that saves the layout reorders around every conv and fuses BN with ReLU (backend/onednn.py).
    """

    def __init__(self, num_classes: int = 16, attention: str = "simam", in_channels: int = 3,
                 data_format: str = "NCHW", drop_rate: float = 0.0) -> None:
        super().__init__()
        self.data_format = data_format
        f = {"data_format": data_format}
        self.b1 = nn.Sequential(BasicConv2d(in_channels, 64, 3, stride=2, **f), _maxpool(data_format))
        self.b2 = nn.Sequential(BasicConv2d(64, 128, 3, **f), _maxpool(data_format))
        self.b3 = nn.Sequential(BasicConv2d(128, 256, 3, **f), _maxpool(data_format))
        self.att3 = create_attention(attention, 256)
        self.b4 = nn.Sequential(BasicConv2d(256, 256, 3, **f), _maxpool(data_format))
        self.att4 = create_attention(attention, 256)
        self.inc1 = Inception(256, 64, (64, 128), (16, 32), 32, **f)
        self.pool1 = _maxpool(data_format)
        self.att5a = create_attention(attention, 256)
        self.inc2 = Inception(256, 64, (64, 128), (16, 32), 32, **f)
        self.pool2 = _maxpool(data_format)
        self.att5b = create_attention(attention, 256)
        self.inc3 = Inception(256, 64, (64, 128), (16, 32), 32, **f)
        self.avgpool = nn.AdaptiveAvgPool2D(1, **f)
        # dropout before the classifier (timm's drop_rate), training only; no parameters
        self.drop = nn.Dropout(drop_rate) if drop_rate else None
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        f = self.data_format
        if f == "NHWC":
            x = x.transpose([0, 2, 3, 1])
        x = self.b2(self.b1(x))
        x = attend(self.att3, self.b3(x), f)
        x = attend(self.att4, self.b4(x), f)
        x = attend(self.att5a, self.pool1(self.inc1(x)), f)
        x = attend(self.att5b, self.pool2(self.inc2(x)), f)
        x = self.avgpool(onednn.to_float32(self.inc3(x))).flatten(1)
        return self.fc(self.drop(x) if self.drop is not None else x)
