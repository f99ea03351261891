"""YAML configs with CLI overrides, checked against the defaults in configs/default.yaml.

A config is a two-level dict: ``cfg["train"]["epochs"]``. Every key that may be set is in
``configs/default.yaml``; its value there fixes the key's type. A YAML file may name a base
file with ``_base_`` (resolved relative to itself) and overrides only what differs.
Unknown keys, wrong types and bad choices raise :class:`UserError` naming the key.
"""
import copy
import functools
from pathlib import Path

import yaml

from app.util.atomic import atomic_write_text
from app.util.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_FILE = CONFIG_DIR / "default.yaml"

# Keys whose default is null: the type they take when set.
NULLABLE = {"output.name": str, "model.pretrained": str, "data.fold": int, "data.folds": int,
            "train.change": str}
# Keys that take true, false or one of these words.
FLAG_OR_WORD = {"data.cache": ("auto",)}
# Keys restricted to a fixed set of values.
CHOICES = {
    "train.device": ("auto", "cpu", "gpu"),
    "train.amp": ("off", "fp16", "bf16"),
    "train.channels_last": ("auto", "on", "off"),
    "data.normalize": ("auto", "split", "imagenet"),
}
# Keys that must be positive numbers (zero allowed where noted by >= 0 below).
POSITIVE = ("data.image_size", "train.epochs", "train.batch_size", "optimizer.lr")
NON_NEGATIVE = ("data.num_workers", "data.crop_padding", "train.threads", "optimizer.weight_decay",
                "data.color_jitter", "data.random_erasing", "train.label_smoothing",
                "train.warmup_epochs", "train.mixup_alpha", "train.cutmix_alpha",
                "train.mix_prob", "train.mix_switch_prob", "train.ema_decay",
                "optimizer.nam_penalty", "optimizer.momentum", "optimizer.sam_rho", "data.rotation",
                "train.freeze_epochs", "optimizer.backbone_lr_mult", "log.attention_every",
                "data.cache_max_mb")

def read_yaml(path) -> dict:
    """Read one YAML file, following ``_base_`` chains; sections are merged key by key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of sections")
    base = data.pop("_base_", None)
    if base is None:
        return data
    merged = read_yaml(path.parent / base)
    for section, values in data.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section].update(values)
        else:
            merged[section] = values
    return merged


@functools.lru_cache(maxsize=1)
def _defaults() -> dict:
    return read_yaml(DEFAULT_FILE)


def defaults() -> dict:
    """A fresh copy of configs/default.yaml (read once per process)."""
    return copy.deepcopy(_defaults())


def _check_type(key: str, value, default):
    if key in FLAG_OR_WORD:
        if isinstance(value, bool) or value in FLAG_OR_WORD[key]:
            return value
        raise UserError(f"config key '{key}' must be true, false or "
                        f"{' or '.join(FLAG_OR_WORD[key])}; got {value!r}")
    if value is None and (default is None or key in NULLABLE):
        return None
    expected = NULLABLE.get(key, type(default))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool) or not isinstance(value, expected):
        raise UserError(f"config key '{key}' expects {expected.__name__}, "
                        f"got {type(value).__name__} {value!r}")
    return value


def set_key(cfg: dict, key: str, value) -> None:
    """Set ``section.name`` in ``cfg`` after checking it exists and has the right type."""
    section, _, name = key.partition(".")
    base = defaults()
    if section not in base or not isinstance(base[section], dict):
        raise UserError(f"unknown config section '{section}' in '{key}' "
                        f"(sections: {', '.join(base)})")
    if name not in base[section]:
        raise UserError(f"unknown config key '{key}' "
                        f"(known in {section}: {', '.join(base[section])})")
    cfg[section][name] = _check_type(key, value, base[section][name])


def check_name(name: str, what: str = "run name") -> str:
    """``name`` if it is a plain folder name: no path separator, no ``..``, no leading dot
    (so a run folder is always a child of ``--output``, and never hidden)."""
    if (not name or "/" in name or "\\" in name or ".." in name or name.startswith(".")
            or "\0" in name):
        raise UserError(f"{what} {name!r} must be a folder name: no '/', '\\', '..' or "
                        f"leading '.'")
    return name


def validate(cfg: dict) -> dict:
    """Check every key of ``cfg`` against the defaults; fill missing keys; return a copy."""
    out = defaults()
    for section, values in cfg.items():
        if not isinstance(values, dict):
            raise UserError(f"config section '{section}' must be a mapping")
        for name, value in values.items():
            set_key(out, f"{section}.{name}", value)
    for key, allowed in CHOICES.items():
        s, n = key.split(".")
        if out[s][n] not in allowed:
            raise UserError(f"config key '{key}' must be one of {', '.join(allowed)}; "
                            f"got {out[s][n]!r}")
    for key in ("data.crop_scale", "data.crop_ratio", "data.erasing_area", "data.randaugment"):
        s, n = key.split(".")
        v = out[s][n]
        ordered = key != "data.randaugment"  # [N, M] is not a range
        if len(v) != 2 or not all(isinstance(x, (int, float)) and x >= 0 for x in v) \
                or (ordered and v[0] > v[1]):
            raise UserError(f"config key '{key}' must be two non-negative numbers [low, high]; "
                            f"got {v!r}")
    if out["train"]["ema_decay"] >= 1:
        raise UserError(f"config key 'train.ema_decay' must be below 1; got {out['train']['ema_decay']!r}")
    if out["data"]["crop_padding"] and out["data"]["random_resized_crop"]:
        raise UserError("data.crop_padding crops from the resized image; with "
                        "data.random_resized_crop on there is none: turn one of them off")
    if out["output"]["name"] is not None:
        check_name(out["output"]["name"], "--name / output.name")
    if out["optimizer"]["sam_rho"] and out["train"]["amp"] != "off":
        raise UserError("optimizer.sam_rho needs train.amp=off (its second pass runs in float32)")
    for key in POSITIVE + NON_NEGATIVE:
        s, n = key.split(".")
        if out[s][n] < 0 or (key in POSITIVE and out[s][n] == 0):
            kind = "positive" if key in POSITIVE else "non-negative"
            raise UserError(f"config key '{key}' must be {kind}; got {out[s][n]!r}")
    return out


def parse_override(text: str):
    """``"train.epochs=5"`` -> ``("train.epochs", 5)``; the value is parsed as YAML.

    Only ``true`` / ``false`` are booleans: YAML 1.1's ``off``, ``on``, ``yes`` and ``no`` stay
    words (``-o train.amp=off``).
    """
    key, sep, raw = text.partition("=")
    if not sep or "." not in key:
        raise UserError(f"override '{text}' must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
        value = raw.strip()
    return key.strip(), value


def model_config_file(model: str):
    """The YAML that ``--model`` picks: the model's own, else its family's, else None.

    ``configs/<model>.yaml`` when it exists; otherwise the longest ``_``-separated prefix of
    the name with a file (``towernet_cbam`` -> ``towernet.yaml``, ``mobilenet_v2_ca`` ->
    ``mobilenet_v2.yaml``); None means configs/default.yaml alone. Adding an attention module
    or a host therefore needs no new YAML: only what really differs between models has one.
    """
    parts = model.split("_")
    for n in range(len(parts), 0, -1):
        path = CONFIG_DIR / f"{'_'.join(parts[:n])}.yaml"
        if path.is_file() and path != DEFAULT_FILE:
            return path
    return None


RECIPE_DIR = CONFIG_DIR / "recipes"


def list_recipes() -> list:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def recipe_file(recipe: str) -> Path:
    """``recipe`` is a name in configs/recipes/ or the path of a YAML file of one's own."""
    if recipe.endswith((".yaml", ".yml")) or "/" in recipe:
        path = Path(recipe)
        if not path.is_file():
            raise UserError(f"recipe file {recipe} does not exist")
        return path
    path = RECIPE_DIR / f"{recipe}.yaml"
    if not path.is_file():
        raise UserError(f"unknown recipe {recipe!r}; known: {', '.join(list_recipes())} "
                        "(or give a recipe file's path)")
    return path


def apply_recipe(cfg: dict, recipe: str) -> None:
    """Layer a recipe onto ``cfg`` (key by key) and record its name (the file's stem).

    A recipe file may start from another with ``_base_: <path relative to it>``, as config
    files do, so a variant lists only what it changes.
    """
    path = recipe_file(recipe)
    for section, values in read_yaml(path).items():
        if not isinstance(values, dict):
            raise UserError(f"recipe {path}: section '{section}' must be a mapping")
        for name, value in values.items():
            set_key(cfg, f"{section}.{name}", value)
    cfg["train"]["recipe"] = path.stem


def load_config(config_file=None, model=None, overrides=(), recipe=None) -> dict:
    """Resolve a run's config: defaults <- file <- recipe <- ``overrides`` (``(key, value)`` pairs).

    Without ``config_file``, :func:`model_config_file` picks the model's (or its family's)
    YAML, so ``--model towernet_se`` picks up TowerNet's own weight decay.
    """
    if config_file is None and model is not None:
        config_file = model_config_file(model)
    cfg = validate(read_yaml(config_file)) if config_file else defaults()
    if model is not None:
        cfg["model"]["name"] = model
    if recipe is not None:
        apply_recipe(cfg, recipe)
    for key, value in overrides:
        set_key(cfg, key, value)
    return validate(cfg)


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)


def save_config(cfg: dict, path) -> None:
    atomic_write_text(path, dump(cfg))
