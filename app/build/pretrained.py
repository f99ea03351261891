"""Start a run from pretrained weights: paddle.vision's ImageNet files, or any ``.pdparams``.

``model.pretrained`` (``--pretrained``): ``imagenet`` takes the host network's ImageNet weights
from the URL and md5 sum that ``paddle.vision.models`` itself uses, downloaded and cached by
Paddle's own ``paddle.utils.download`` (in ~/.cache/paddle/hapi/weights; a file already there
with the right md5 is used without a network). A PATH is a state dict: paddle.vision's file,
a PaddleClas file with the same layer names, or best/last.pdparams of one of our runs.

A tensor loads when the model has a tensor of the same name and shape. What stays fresh is
reported by kind: the classifier head (the last Linear: another class count), attention
modules (new in the host, they start as the module defines them: the non-local block as an
identity, SimAM has nothing to load), and anything else. Fewer than ``MIN_BODY_SHARE`` of the
model's other tensors loading means the file belongs to another network: a one-line error.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from paddle import nn

from app.build.weights import RefusedGlobal, read_weights, split_checkpoint
from app.util.errors import UserError
from models import upgrade_state_dict
from models.attention import _ATTENTIONS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_BODY_SHARE = 0.9
_HOSTS = ("mobilenet_v2", "resnet50", "vgg19")


def imagenet_url(model_name: str) -> tuple[str, str]:
    """(url, md5) of paddle.vision's ImageNet weights for the host of ``model_name``."""
    from paddle.vision.models import mobilenetv2, resnet, vgg

    urls = {"resnet50": resnet.model_urls["resnet50"], "vgg19": vgg.model_urls["vgg19"],
            "mobilenet_v2": mobilenetv2.model_urls["mobilenetv2_1.0"]}
    host = next((h for h in _HOSTS if model_name == h or model_name.startswith(h + "_")), None)
    if host is None:
        raise UserError(f"--pretrained imagenet: paddle.vision has no ImageNet weights for "
                        f"{model_name} (only {', '.join(_HOSTS)} and their _<attention> "
                        f"variants); pass a .pdparams file instead")
    return urls[host]


def check_source(source: str, model_name: str) -> None:
    """What :func:`resolve_source` would refuse before it downloads anything: a study checks
    every run's source before the first run trains."""
    if source == "imagenet":
        imagenet_url(model_name)
    elif not Path(source).is_file():
        raise UserError(f"--pretrained {source}: file not found")


def resolve_source(source: str, model_name: str) -> Path:
    """The local file behind ``source`` (``imagenet`` is downloaded through Paddle, once)."""
    check_source(source, model_name)
    if source != "imagenet":
        return Path(source)
    from paddle.utils import download

    url, md5 = imagenet_url(model_name)
    try:
        return Path(download.get_weights_path_from_url(url, md5))
    except Exception as e:  # Paddle's downloader raises RuntimeError after its own retries
        raise UserError(f"--pretrained imagenet: cannot download {url} ({type(e).__name__}); "
                        f"fetch that file on a machine with internet and pass "
                        f"--pretrained /path/to/{url.rsplit('/', 1)[-1]}") from None


def read_state_dict(path: Path) -> dict:
    """``path`` as a {name: tensor} dict (earlier resnet50_<att> keys mapped); UserError if it is
    not one, or if it would run code when read (app/build/weights.py)."""
    try:
        state = read_weights(path)
    except RefusedGlobal:
        raise
    except Exception as e:  # truncated, not a pickle, a static-graph file, ...
        raise UserError(f"cannot read {path} as a Paddle state dict ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:120] if str(e) else 'no detail'})") from None
    if not isinstance(state, dict) or not state or not all(hasattr(v, "shape") for v in state.values()):
        raise UserError(f"{path} is not a state dict of tensors (a .pdopt or a whole model?)")
    trained, average, _ = split_checkpoint(state)  # our last.pdparams with an EMA: its average
    return upgrade_state_dict(average or trained)[0]


def head_and_attention_keys(network: nn.Layer) -> tuple[set, set]:
    """State-dict keys of the classifier head (the last Linear) and of attention modules."""
    head_prefix = [name for name, m in network.named_sublayers() if isinstance(m, nn.Linear)][-1]
    kinds = tuple(_ATTENTIONS.values())
    att_prefixes = tuple(f"{name}." for name, m in network.named_sublayers() if isinstance(m, kinds))
    keys = network.state_dict().keys()
    head = {k for k in keys if k.startswith(f"{head_prefix}.")}
    return head, {k for k in keys if k.startswith(att_prefixes)}


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_pretrained(network: nn.Layer, source: str, model_name: str, path=None) -> dict:
    """Load what fits of ``source`` (at ``path`` if already resolved) into ``network``.

    Returns the report (pretrained.json). Raises UserError when the file cannot be had or
    read, or fits less than ``MIN_BODY_SHARE`` of the model's non-head, non-attention tensors.
    """
    path = Path(path) if path is not None else resolve_source(source, model_name)
    state = read_state_dict(path)
    own = network.state_dict()
    loaded = [k for k, v in own.items() if k in state and list(state[k].shape) == list(v.shape)]
    head, attention = head_and_attention_keys(network)
    body = [k for k in own if k not in head and k not in attention]
    loaded_set = set(loaded)
    body_loaded = loaded_set & set(body)
    if len(body_loaded) < MIN_BODY_SHARE * len(body):
        misses = [f"{k} ({'missing' if k not in state else f'{list(state[k].shape)} vs {list(own[k].shape)}'})"
                  for k in body if k not in body_loaded][:3]
        raise UserError(f"{path} does not fit {model_name}: {len(body_loaded)} of its {len(body)} "
                        f"backbone tensors match by name and shape (first mismatches: "
                        f"{', '.join(misses)}); that is another network, not a fine-tune")
    for k in loaded:
        own[k].set_value(state[k].astype(own[k].dtype) if state[k].dtype != own[k].dtype else state[k])
    fresh = [k for k in own if k not in loaded_set]
    return {
        "source": source, "file": str(path), "md5": _md5(path), "loaded": loaded,
        "fresh": {"head": [k for k in fresh if k in head],
                  "attention": [k for k in fresh if k in attention],
                  "other": [k for k in fresh if k not in head and k not in attention]},
        "unused": [k for k in state if k not in loaded_set],
        "file_tensors": len(state),
    }


def summary_line(report: dict) -> str:
    fresh = report["fresh"]
    n_fresh = sum(len(v) for v in fresh.values())
    return (f"pretrained {Path(report['file']).name}: loaded {len(report['loaded'])} of the file's "
            f"{report['file_tensors']} tensors; {n_fresh} tensors of the model start fresh "
            f"({len(fresh['head'])} head, {len(fresh['attention'])} attention, "
            f"{len(fresh['other'])} other)")


def loaded_parameters(network: nn.Layer, loaded_keys) -> list:
    """The parameters (not buffers) among ``loaded_keys``."""
    keys = set(loaded_keys)
    return [p for name, p in network.named_parameters() if name in keys]


def loaded_batch_norms(network: nn.Layer, loaded_keys) -> list:
    """BatchNorm layers whose scale was loaded (their statistics freeze with the backbone)."""
    keys = set(loaded_keys)
    return [m for name, m in network.named_sublayers()
            if isinstance(m, nn.layer.norm._BatchNormBase) and f"{name}.weight" in keys]


def scale_backbone_lr(network: nn.Layer, loaded_keys, mult: float) -> None:
    """Scale the learning rate of every loaded parameter by ``mult`` (Paddle's per-parameter lr)."""
    if mult == 1.0:
        return
    for p in loaded_parameters(network, loaded_keys):
        p.optimize_attr["learning_rate"] = mult
