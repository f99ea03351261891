"""Attention modules, one per file, built by name.

``create_attention(name, channels, **kwargs)`` returns a layer that keeps its input's shape;
``"none"`` gives ``paddle.nn.Identity()``. Every module has an attribute ``min_hw``: the
smallest H*W map it carries meaningfully (SimAM and non-local need 2; the rest work on 1x1);
a module may also have ``max_hw``, the largest (non-local: its memory grows with (H*W)^2).
Host networks call :func:`attend`, which skips a module on a map outside that range.
"""
from __future__ import annotations

import paddle
from paddle import nn

from backend.onednn import to_float32

from .ca import CoordAttention
from .cbam import CBAM
from .darknet_se import DarknetSE
from .eca import ECA, eca_kernel_size
from .nam import NAM
from .nonlocal_block import NonLocal
from .sam import SAM
from .se import SE
from .simam import SimAM

_ATTENTIONS: dict[str, type[nn.Layer]] = {
    "simam": SimAM,
    "se": SE,
    "eca": ECA,
    "ca": CoordAttention,
    "cbam": CBAM,
    "nam": NAM,
    "darknet_se": DarknetSE,
    "nonlocal": NonLocal,
    "sam": SAM,
}

__all__ = [
    "CBAM", "ECA", "NAM", "SAM", "SE", "CoordAttention", "DarknetSE", "NonLocal", "SimAM",
    "attend", "create_attention", "eca_kernel_size", "has_nam", "list_attentions",
    "nam_sparsity_penalty",
]


def list_attentions() -> list[str]:
    """Names accepted by :func:`create_attention`, sorted (``"none"`` not included)."""
    return sorted(_ATTENTIONS)


def create_attention(name: str, channels: int, **kwargs) -> nn.Layer:
    """Build attention ``name`` for ``channels`` channels; ``"none"`` gives an identity.

    Raises ValueError naming the known attentions when ``name`` is unknown.
    """
    if name == "none":
        return nn.Identity()
    if name not in _ATTENTIONS:
        raise ValueError(f"unknown attention {name!r}; known: none, {', '.join(list_attentions())}")
    return _ATTENTIONS[name](channels, **kwargs)


def attend(attention: nn.Layer, x: paddle.Tensor, data_format: str = "NCHW") -> paddle.Tensor:
    """``attention(x)``, or ``x`` itself when its H*W is outside the module's [min_hw, max_hw].

    Decided from the static spatial shape: known in dygraph, and under ``to_static`` with a
    fixed input size. Modules compute in NCHW: ``x`` channels-last (a channels-last host,
    ``data_format="NHWC"``) goes in as a transposed copy and comes back channels-last, except
    to a module that declares ``takes_channels_last`` (SimAM: one C kernel, backend/fused.py),
    which is called as ``attention(x, "NHWC")``.
    SimAM written channels-last in Paddle ops (its sums as batched products with ones, or as
    reductions) took 17-23 ms forward + backward at TowerNet's 128-px shapes against 7.2 NCHW
    and 9.4 with the two transposes; its C kernel takes 1.1-1.6 (docs/speed.md).
    """
    nhwc = data_format == "NHWC"
    h, w = (x.shape[1], x.shape[2]) if nhwc else (x.shape[2], x.shape[3])
    hw = h * w
    if hw < getattr(attention, "min_hw", 1) or hw > getattr(attention, "max_hw", hw):
        return x
    if isinstance(attention, nn.Identity):
        return x
    x = to_float32(x)  # modules compute in float32: a bfloat16 chain (backend/onednn.py) ends here
    if nhwc and getattr(attention, "takes_channels_last", False):
        return attention(x, "NHWC")
    if nhwc:
        return attention(x.transpose([0, 3, 1, 2])).transpose([0, 2, 3, 1])
    return attention(x)


def _nam_norms(model: nn.Layer) -> list[nn.Layer]:
    return [bn for m in model.sublayers(include_self=True) if isinstance(m, NAM)
            for bn in (m.bn, m.pixel_bn) if bn is not None]


def has_nam(model: nn.Layer) -> bool:
    """Whether ``model`` contains a NAM module (and so wants :func:`nam_sparsity_penalty`)."""
    return any(isinstance(m, NAM) for m in model.sublayers(include_self=True))


def nam_sparsity_penalty(model: nn.Layer, weight: float = 1e-4) -> paddle.Tensor | None:
    """``weight * sum|gamma|`` over the BatchNorm scales inside NAM modules, to add to the loss.

    Returns None when ``model`` has no NAM module.
    """
    norms = _nam_norms(model)
    if not norms:
        return None
    return weight * paddle.add_n([bn.weight.abs().sum() for bn in norms])
