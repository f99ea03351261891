"""Hosts from ``paddle.vision.models``: VGG-19, ResNet-50 and MobileNetV2, with attention inserted.

He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition", CVPR 2016.
https://arxiv.org/abs/1512.03385  Sandler, Howard, Zhu, Zhmoginov, Chen. "MobileNetV2:
Inverted Residuals and Linear Bottlenecks", CVPR 2018. https://arxiv.org/abs/1801.04381
(VGG-19, ResNet-50 and MobileNetV2 are paddle's own definitions.) Weights are freshly
initialised: nothing here downloads.

Every host keeps every state-dict key and shape of the plain paddle.vision model, so that
its ImageNet weights load by name; an attention module is a new sublayer ``att`` of the block
it sits in, and the block's ``forward`` calls it (through ``models.attention.attend``, which
skips it on maps outside its ``min_hw``/``max_hw``).

Where the attention goes in a ResNet bottleneck (conv1-bn1-relu, conv2-bn2-relu, conv3-bn3,
+ identity, relu):
- SimAM right after the 3x3 conv2, before bn2, as the official SimAM code does
  (https://github.com/ZjjConan/SimAM, networks/imagenet/resnet.py);
- non-local after the block's output, in every other block of res3 and res4 (blocks 1, 3 of
  layer2 and 1, 3, 5 of layer3: 5 blocks), as Wang et al. place them (section 4.1; the
  reference code's ``nonlocal_mod = 2``); the other bottlenecks carry none;
- every other module after bn3, before the residual add, as SE-ResNet, CBAM and ECA-Net do.

In a MobileNetV2 inverted residual (expand 1x1, depthwise 3x3, project 1x1) the module goes
after the depthwise conv's BN + ReLU6 and before the projection, in every block: where
Coordinate Attention's paper (Hou, Zhou, Feng, CVPR 2021, Figure 5) and MobileNetV3's SE put it.

``data_format="NHWC"`` (ResNet-50 and MobileNetV2 hosts; not VGG, whose classifier reads the
flattened 7x7 map in NCHW order) switches paddle's layers to channels-last in place
(:func:`channels_last`): same parameters, same input and output, faster on oneDNN.

``upgrade_state_dict`` maps checkpoints of the earlier ``resnet50_<att>`` layout, which wrapped
conv2 / bn3 in a Sequential (``layer1.0.conv2.0.weight``), onto these keys.
"""
from __future__ import annotations

import collections
import re

import paddle
from paddle import nn
from paddle.vision import models as pvm
from paddle.vision.models.mobilenetv2 import InvertedResidual
from paddle.vision.models.resnet import BottleneckBlock, ResNet

from backend import onednn

from .attention import attend, create_attention

# ResNet-50's stage widths (planes) -> the bottleneck indices that carry a non-local block.
_NONLOCAL_BLOCKS = {128: (1, 3), 256: (1, 3, 5)}


class AttentionBottleneck(BottleneckBlock):
    """paddle's BottleneckBlock plus a sublayer ``att`` at ``position``: conv2 | bn3 | out."""

    def __init__(self, *args, attention: str, position: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        channels = self.conv2._out_channels if position == "conv2" else self.conv3._out_channels
        self.att = create_attention(attention, channels)
        self.position = position
        self.data_format = "NCHW"  # of the maps; :func:`channels_last` switches it
        # Each conv's output goes only to a BN of backend.onednn (or to attend): bfloat16 chains
        convs = [self.conv1, self.conv2, self.conv3]
        if self.downsample is not None:
            convs.append(self.downsample[0])
        for conv in convs:
            conv.bf16_chain = True

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        # relu(bn(conv(x))) as batch_norm(conv(x), bn, relu=True): one pass on oneDNN when
        # channels-last, Paddle's BN and ReLU otherwise; the block end's add + ReLU likewise
        # (backend/onednn.py).
        f = self.data_format
        x, identity = onednn.fork(x, 2)  # the two paths' gradients summed on oneDNN
        out = self.conv2(onednn.batch_norm(self.conv1(x), self.bn1, relu=True))
        if self.position == "conv2":
            out = attend(self.att, out, f)
        out = self.bn3(self.conv3(onednn.batch_norm(out, self.bn2, relu=True)))
        if self.position == "bn3":
            out = attend(self.att, out, f)
        if self.downsample is not None:
            identity = self.downsample(identity)
        out = onednn.add_relu(out, identity)  # self.relu(out + identity), fused on oneDNN
        return attend(self.att, out, f) if self.position == "out" else out


def _bottleneck_factory(attention: str):
    """A block class stand-in for ResNet that puts ``attention`` where this module says."""
    position = {"simam": "conv2", "nonlocal": "out"}.get(attention, "bn3")
    seen = collections.Counter()

    def make(inplanes, planes, *args, **kwargs):
        index = seen[planes]
        seen[planes] += 1
        att = attention
        if attention == "nonlocal" and index not in _NONLOCAL_BLOCKS.get(planes, ()):
            att = "none"
        return AttentionBottleneck(inplanes, planes, *args, attention=att, position=position,
                                   **kwargs)

    make.expansion = BottleneckBlock.expansion  # ResNet reads it off the block class
    return make


def resnet50_with(attention: str, num_classes: int = 16, data_format: str = "NCHW") -> ResNet:
    """ResNet-50 with ``attention`` in its bottlenecks (every one; non-local in five)."""
    return channels_last(ResNet(_bottleneck_factory(attention), depth=50, num_classes=num_classes),
                         data_format)


class AttentionInvertedResidual(nn.Layer):
    """paddle's InvertedResidual (its ``conv`` Sequential adopted as is) + ``att`` after the depthwise conv."""

    def __init__(self, block: InvertedResidual, attention: str) -> None:
        super().__init__()
        self.stride = block.stride
        self.use_res_connect = block.use_res_connect
        self.conv = block.conv
        self._depthwise = len(self.conv) - 3  # [expand], depthwise CNA, project conv, BN
        self.att = create_attention(attention, self.conv[self._depthwise][0]._out_channels)
        self.data_format = "NCHW"  # of the maps; :func:`channels_last` switches it

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        out = x
        for i, layer in enumerate(self.conv):
            out = layer(out)
            if i == self._depthwise:
                out = attend(self.att, out, self.data_format)
        return x + out if self.use_res_connect else out


def mobilenet_v2_with(attention: str, num_classes: int = 16, data_format: str = "NCHW") -> nn.Layer:
    """MobileNetV2 with ``attention`` in each of its 17 inverted residual blocks."""
    model = pvm.mobilenet_v2(pretrained=False, num_classes=num_classes)
    for name, block in list(model.features.named_children()):
        if isinstance(block, InvertedResidual):
            setattr(model.features, name, AttentionInvertedResidual(block, attention))
    return channels_last(model, data_format)


def vgg19(num_classes: int = 16) -> nn.Layer:
    return pvm.vgg19(pretrained=False, num_classes=num_classes)


def resnet50(num_classes: int = 16, data_format: str = "NCHW") -> nn.Layer:
    """paddle.vision's ResNet-50 (same layers and keys), its bottlenecks :class:`AttentionBottleneck`
    with no attention, for their fused BN + ReLU."""
    return resnet50_with("none", num_classes, data_format)


def mobilenet_v2(num_classes: int = 16, data_format: str = "NCHW") -> nn.Layer:
    return channels_last(pvm.mobilenet_v2(pretrained=False, num_classes=num_classes), data_format)


def _to_channels_last(x: paddle.Tensor) -> paddle.Tensor:
    return x.transpose([0, 2, 3, 1])


def channels_last(model: nn.Layer, data_format: str = "NHWC") -> nn.Layer:
    """``model`` (a paddle.vision ResNet or MobileNetV2) switched to channels-last in place.

    paddle's hosts take no ``data_format``, but every op between their input and their
    flatten is layout-free (convs, BN, activations, pools, residual adds) once those layers
    are told the layout: the layers' ``data_format`` is set, the blocks' attention slots are
    told, and a forward pre-hook transposes the NCHW input. The flatten after the 1x1 global
    pool reads the same C numbers either way. Same parameters and names. ``"NCHW"``: as is.
    """
    if data_format == "NCHW":
        return model
    # Attention modules keep NCHW: attend() hands them NCHW copies.
    blocks = [m for m in model.sublayers() if isinstance(m, (AttentionBottleneck, AttentionInvertedResidual))]
    inside_attention = {id(m) for b in blocks for m in b.att.sublayers(include_self=True)}
    for layer in model.sublayers(include_self=True):
        if id(layer) in inside_attention:
            continue
        if isinstance(layer, nn.Conv2D):
            layer._data_format, layer._channel_dim = "NHWC", 3
        elif isinstance(layer, (nn.BatchNorm2D, nn.AdaptiveAvgPool2D)):
            layer._data_format = "NHWC"
        elif isinstance(layer, nn.MaxPool2D):
            layer.data_format = "NHWC"
        elif isinstance(layer, (AttentionBottleneck, AttentionInvertedResidual)):
            layer.data_format = "NHWC"
    model.data_format = "NHWC"
    if isinstance(model, ResNet) and type(model.bn1) is nn.BatchNorm2D and type(model.relu) is nn.ReLU:
        # The stem conv -> BN -> ReLU -> max-pool as a bfloat16 chain, BN and ReLU in one op
        # (no Paddle float32 ReLU and backward on the 64x64 map: -3% of a bf16 step, docs/speed.md).
        model.conv1.bf16_chain = True
        model.bn1.__class__, model.relu.__class__ = onednn.BatchNormReLU, onednn.AppliedBefore
    if isinstance(getattr(model, "avgpool", None), nn.AdaptiveAvgPool2D):  # a bfloat16 chain ends there
        model.avgpool.register_forward_pre_hook(lambda layer, inputs: (onednn.to_float32(inputs[0]),))
    model.register_forward_pre_hook(lambda layer, inputs: (_to_channels_last(inputs[0]), *inputs[1:]))
    return model


_LEGACY_KEY = re.compile(r"^(layer\d\.\d+)\.(conv2|bn3)\.([01])\.(.+)$")


def upgrade_state_dict(state: dict) -> tuple[dict, bool]:
    """``(state, changed)``: keys of the earlier resnet50_<att> layout renamed to today's.

    ``layerX.Y.conv2.0.*`` / ``bn3.0.*`` -> ``conv2.*`` / ``bn3.*``; ``conv2.1.*`` / ``bn3.1.*``
    (the attention module) -> ``att.*``. Other keys pass unchanged.
    """
    out, changed = {}, False
    for key, value in state.items():
        m = _LEGACY_KEY.match(key)
        if m:
            block, layer, index, rest = m.groups()
            key = f"{block}.{layer}.{rest}" if index == "0" else f"{block}.att.{rest}"
            changed = True
        out[key] = value
    return out, changed
