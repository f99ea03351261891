"""The network a run trains: a registered model, channels-last inside where that is faster."""
import paddle

from app.util.errors import UserError
from backend import onednn
from models import channels_last_capable, create_model, list_models


def check_model_name(name: str) -> None:
    if name not in list_models():
        raise UserError(f"unknown model '{name}'; known: {', '.join(list_models())}")


def use_channels_last(setting: str, name: str, device: str) -> bool:
    """``train.channels_last`` resolved: ``auto`` is on for a model that has the layout, on a
    CPU whose oneDNN path is available (that is where it is faster, docs/speed.md)."""
    if setting == "off":
        return False
    if setting == "on":
        if not channels_last_capable(name):
            raise UserError(f"model '{name}' has no channels-last layout (train.channels_last=on); "
                            f"use auto or off")
        return True
    return channels_last_capable(name) and device == "cpu" and onednn.available()


def build_network(name: str, num_classes: int, kwargs=None, channels_last: bool = False) -> paddle.nn.Layer:
    """The registered model ``name`` (``kwargs``: the config's ``model.kwargs``), NHWC inside
    with ``channels_last``; a bad name or argument is one line."""
    check_model_name(name)
    layout = {"data_format": "NHWC"} if channels_last else {}
    try:
        return create_model(name, num_classes=num_classes, **(kwargs or {}), **layout)
    except ValueError as e:
        raise UserError(str(e).splitlines()[0]) from e
    except TypeError as e:
        raise UserError(f"model '{name}': {e}") from e
