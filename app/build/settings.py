"""What a config means on this machine, resolved once per run: device, layout, mixed precision,
normalisation and the pretrained file.

Everything here can fail on the user's input (no GPU, a CPU without bfloat16, a model without
channels-last, a missing weights file), so a run resolves it before it loads any data.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.build import pretrained
from app.build.device import seed_everything, select_device
from app.build.model import amp_configs_for
from app.build.network import check_model_name, use_channels_last


@dataclass(frozen=True)
class Settings:
    device: str                      # "cpu" | "gpu"
    channels_last: bool              # the network runs NHWC inside
    amp_configs: dict | None         # hapi's amp_configs (None: float32, or bf16 on a CPU)
    normalize: str                   # "split" (the manifest's mean/std) | "imagenet"
    pretrained_file: Path | None     # the weights a new run starts from

    @property
    def norm_stats(self) -> dict | None:
        """{"mean", "std"} to normalise with instead of the split's own, or None."""
        return _stats(self.normalize)


def normalization(data: dict, model: dict) -> str:
    """``split`` or ``imagenet``: ``auto`` is imagenet for ImageNet weights, else the split's."""
    if data["normalize"] == "auto":
        return "imagenet" if model["pretrained"] == "imagenet" else "split"
    return data["normalize"]


def norm_stats(data: dict, model: dict) -> dict | None:
    """The config's ``data`` and ``model`` sections' :attr:`Settings.norm_stats`."""
    return _stats(normalization(data, model))


def _stats(normalize: str) -> dict | None:
    if normalize != "imagenet":
        return None
    return {"mean": pretrained.IMAGENET_MEAN, "std": pretrained.IMAGENET_STD}


def resolve_settings(cfg: dict, resume: bool = False) -> Settings:
    """Select the device (and its threads), seed every generator with ``train.seed``, and
    resolve the rest of :class:`Settings`. A resumed run's pretrained weights are already in
    its checkpoint, so its file is not looked for (nor downloaded) again."""
    model, train = cfg["model"], cfg["train"]
    check_model_name(model["name"])
    device = select_device(train["device"], train["threads"])
    amp_configs = amp_configs_for(train["amp"])
    channels_last = use_channels_last(train["channels_last"], model["name"], device)
    seed_everything(train["seed"])
    source = model["pretrained"]
    pretrained_file = (pretrained.resolve_source(source, model["name"])
                       if source and not resume else None)
    return Settings(device, channels_last, amp_configs, normalization(cfg["data"], model),
                    pretrained_file)
