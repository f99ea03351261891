"""Model registry: every trainable network, built by name.

    from models import create_model, list_models
    model = create_model("towernet_simam", num_classes=16)

Importing the package registers every model. A model built by :func:`create_model` remembers
how: ``model_spec(model)`` gives ``{"name": ..., "kwargs": {...}}`` for a checkpoint, and
``create_model(spec["name"], **spec["kwargs"])`` rebuilds it.

Every model's ``nn.Conv2D`` and ``nn.MaxPool2D`` layers are switched in place to
:mod:`backend.onednn`'s (same layers and parameters; their dygraph CPU passes run on the oneDNN
inside the Paddle wheel, 1.4x and 2x faster than Paddle's own CPU kernels).
``TOWERNET_ONEDNN=0`` in the environment turns that off.

``create_model(name, data_format="NHWC")`` builds a model that :func:`channels_last_capable`
names channels-last inside (same parameters, same input and output; faster on oneDNN). The
layout is how a model runs, not what it is: it stays out of ``model_spec``, and
:func:`nchw_twin` gives the NCHW network with the same weights for tools that read feature
maps (Grad-CAM, attention pictures).
"""
from __future__ import annotations

import functools
from collections.abc import Callable

from paddle import nn

from backend import onednn

from . import baselines
from .attention import list_attentions
from .towernet import TowerNet

_MODELS: dict[str, Callable[..., nn.Layer]] = {}
_CHANNELS_LAST: set[str] = set()  # models whose builder takes data_format="NHWC"


def register_model(fn: Callable[..., nn.Layer] | None = None, *, name: str | None = None,
                   channels_last: bool = False):
    """Register a model builder under ``name`` (default: the function's name).

    Usable as ``@register_model``, ``@register_model(name=...)`` or ``register_model(fn, name=...)``.
    ``channels_last``: the builder takes ``data_format="NHWC"``.
    """
    def add(f: Callable[..., nn.Layer]) -> Callable[..., nn.Layer]:
        key = name or f.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} is registered twice")
        _MODELS[key] = f
        if channels_last:
            _CHANNELS_LAST.add(key)
        return f

    return add(fn) if fn is not None else add


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_MODELS)


def channels_last_capable(name: str) -> bool:
    """Whether ``create_model(name, data_format="NHWC")`` is possible."""
    return name in _CHANNELS_LAST


def create_model(name: str, num_classes: int = 16, data_format: str = "NCHW", **kwargs) -> nn.Layer:
    """Build model ``name`` with fresh weights; unknown names raise ValueError listing the known ones."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    layout = {}
    if data_format != "NCHW":
        if data_format != "NHWC" or not channels_last_capable(name):
            raise ValueError(f"model {name!r} has no data_format {data_format!r}")
        layout = {"data_format": data_format}
    model = onednn.convert(_MODELS[name](num_classes=num_classes, **kwargs, **layout))
    model._model_spec = {"name": name, "kwargs": {"num_classes": num_classes, **kwargs}}
    model.data_format = data_format
    return model


def nchw_twin(model: nn.Layer) -> nn.Layer:
    """``model`` itself if NCHW, else the same network built NCHW with its current weights
    (and train/eval mode)."""
    if getattr(model, "data_format", "NCHW") == "NCHW":
        return model
    spec = model_spec(model)
    twin = create_model(spec["name"], **spec["kwargs"])
    twin.set_state_dict(model.state_dict())
    twin.train(model.training)
    return twin


def model_spec(model: nn.Layer) -> dict:
    """``{"name", "kwargs"}`` with which :func:`create_model` built ``model`` (for checkpoints)."""
    spec = getattr(model, "_model_spec", None)
    if spec is None:
        raise ValueError("model was not built by models.create_model; its spec is unknown")
    return {"name": spec["name"], "kwargs": dict(spec["kwargs"])}


register_model(functools.partial(TowerNet, attention="none"), name="towernet", channels_last=True)
for _att in list_attentions():
    register_model(functools.partial(TowerNet, attention=_att), name=f"towernet_{_att}", channels_last=True)
    register_model(functools.partial(baselines.mobilenet_v2_with, _att), name=f"mobilenet_v2_{_att}",
                   channels_last=True)
    if _att != "darknet_se":
        register_model(functools.partial(baselines.resnet50_with, _att), name=f"resnet50_{_att}",
                       channels_last=True)
register_model(baselines.vgg19)
for _fn in (baselines.resnet50, baselines.mobilenet_v2):
    register_model(_fn, channels_last=True)

upgrade_state_dict = baselines.upgrade_state_dict

__all__ = ["TowerNet", "channels_last_capable", "create_model", "list_models", "model_spec",
           "nchw_twin", "register_model", "upgrade_state_dict"]
