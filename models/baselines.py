"""Baselines from ``paddle.vision.models`` and ResNet-50 with attention in every bottleneck.

He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition", CVPR 2016.
https://arxiv.org/abs/1512.03385 (VGG-19 and MobileNetV2 are paddle's own definitions.)
Weights are always freshly initialised: nothing here downloads.

Where the attention goes in a bottleneck (conv1-bn1-relu, conv2-bn2-relu, conv3-bn3, + identity):
- SimAM right after the 3x3 conv2, before bn2, as the official SimAM code does
  (https://github.com/ZjjConan/SimAM, networks/imagenet/resnet.py: ``self.conv2 =
  nn.Sequential(self.conv2, attention_module(width))``);
- every other module after bn3, before the residual add, as SE-ResNet, CBAM and ECA-Net do
  (same file: ``self.bn3 = nn.Sequential(self.bn3, attention_module(planes * 4))``).
"""
from __future__ import annotations

import functools

from paddle import nn
from paddle.vision import models as pvm
from paddle.vision.models.resnet import BottleneckBlock, ResNet

from .attention import create_attention


class AttentionBottleneck(BottleneckBlock):
    """paddle's BottleneckBlock with ``attention`` wrapped into conv2 (SimAM) or bn3 (others).

    Wrapping the existing sublayers keeps paddle's ``forward`` unchanged.
    """

    def __init__(self, *args, attention: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if attention == "simam":
            self.conv2 = nn.Sequential(self.conv2, create_attention(attention, self.conv2._out_channels))
        else:
            self.bn3 = nn.Sequential(self.bn3, create_attention(attention, self.conv3._out_channels))


def resnet50_with(attention: str, num_classes: int = 16) -> ResNet:
    """ResNet-50 whose 16 bottlenecks each carry ``attention``."""
    block = functools.partial(AttentionBottleneck, attention=attention)
    block.expansion = BottleneckBlock.expansion  # ResNet reads it off the block class
    return ResNet(block, depth=50, num_classes=num_classes)


def vgg19(num_classes: int = 16) -> nn.Layer:
    return pvm.vgg19(pretrained=False, num_classes=num_classes)


def resnet50(num_classes: int = 16) -> nn.Layer:
    return pvm.resnet50(pretrained=False, num_classes=num_classes)


def mobilenet_v2(num_classes: int = 16) -> nn.Layer:
    return pvm.mobilenet_v2(pretrained=False, num_classes=num_classes)
