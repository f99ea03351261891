"""The runs of a study: their names and report labels, and every run below a folder, read."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

from app.config.load import check_name
from app.config.resume import changed_keys, complete_run_config
from app.run.folder import RunFolder, read_json
from app.util.errors import UserError


def study_run_name(model: str, seed: int, cfg: dict | None = None, fold: int | None = None) -> str:
    """``<model>-s<seed>`` (``-f<fold>`` in a K-fold study); a pretrained run is
    ``<model>@<source tag>-s<seed>`` (see run_label), a run of a ``--versus`` change that
    its label does not show ``<model>-<change>-s<seed>`` (``towernet-optimizer.lr=0.05-s0``)."""
    label = run_label(cfg) if cfg else model
    change = (cfg or {}).get("train", {}).get("change")
    if change:
        label += " " + re.sub(r"[\\/\s]", "_", change)
    name = label.replace(" @", "@").replace(" +", "+").replace(" ", "-")
    return check_name(f"{name}-s{seed}" + ("" if fold is None else f"-f{fold}"), "study run name")


def run_label(cfg: dict) -> str:
    """A run's row in a report: the model, marked with its recipe when not the reference one,
    with bf16 when it trained in bfloat16, and with what it started from when pretrained
    (``mobilenet_v2 @imagenet``, ``towernet bf16 @pretrain-68``), so that runs from scratch
    and fine-tuned runs, or fp32 and bf16 runs, of one model are never pooled."""
    name = cfg["model"]["name"]
    recipe = cfg.get("train", {}).get("recipe", "reference")
    if recipe != "reference":
        name = f"{name} +{recipe}"
    if cfg.get("train", {}).get("amp", "off") != "off":
        name = f"{name} {cfg['train']['amp']}"
    source = cfg["model"].get("pretrained")
    if not source:
        return name
    path = Path(source)
    if path.stem in ("best", "last") and path.parent.name in ("", ".", ".."):
        path = path.resolve()  # ../best.pdparams: the run folder's own name
    tag = source if source == "imagenet" else (
        path.parent.name if path.stem in ("best", "last") else path.stem)
    return f"{name} @{tag}"


def read_runs(root) -> list:
    """Every run below ``root`` (a folder with config.yaml + metrics.csv, finished or not):
    dir, model (its report label, see :func:`run_label`), arch (the model name), seed,
    epochs, image_size, per-epoch rows, best.json as ``meta`` ({} if none)."""
    runs = []
    for run in RunFolder.find_below(root):
        rows = run.read_metrics()
        if not rows:
            continue
        cfg = run.read_config_raw()
        try:  # a truncated file can still be YAML: every section must be there, and the keys read here
            if not complete_run_config(cfg):
                raise KeyError("a section")
            label, fields = run_label(cfg), {"arch": cfg["model"]["name"], "seed": cfg["train"]["seed"],
                                             "fold": cfg["data"].get("fold"), "epochs": cfg["train"]["epochs"],
                                             "image_size": cfg["data"]["image_size"]}
        except (KeyError, TypeError, AttributeError):
            raise UserError(f"{run.config_file} is damaged; restore it (the run's resolved config) or "
                            f"move the run folder out of {root}") from None
        hint = f"restore it or move the run folder out of {root}"
        state = read_json(run.state_file, hint) if run.state_file.is_file() else {}
        best = run.read_best(hint) if run.best_file.is_file() else {}
        runs.append({"dir": run.path, "model": label, **fields, "config": cfg,
                     "predictions": run.read_predictions(),
                     "rows": rows, "num_classes": best.get("num_classes", 16), "meta": best,
                     "finished": state.get("status") == "finished"})
    return runs


def resumed_config(run_dir, cfg: dict) -> dict:
    """The config an interrupted study run resumes on: the run's own, read from the split
    the study command names (the data may have moved since; the runner has made sure it is
    the same split)."""
    run_cfg = RunFolder(run_dir).read_config()
    run_cfg["data"]["root"] = cfg["data"]["root"]
    return run_cfg


def mark_budgets(runs: list) -> list:
    """``runs`` with the label of each run trained for another number of epochs or at another
    image size than most of them tagged with it (``towernet +small_data 60ep``, ``... 160px``),
    so that one model at two budgets is two rows, never pooled, and :func:`one_change_pairs`
    pairs them like any other tag. Of two values equally common, the smaller is the plain one.
    Then :func:`mark_settings`."""
    runs = [dict(r) for r in runs]
    for key, unit in (("epochs", "ep"), ("image_size", "px")):
        counts = Counter(r[key] for r in runs)
        plain = max(sorted(counts), key=counts.get)
        for r in runs:
            if r[key] != plain:
                r["model"] = f"{r['model']} {r[key]}{unit}"
    return mark_settings(runs)


# Keys that tell runs of one study apart or say where they ran, not what they compute; the
# label, the budget tags and changed_keys' own exclusions cover the rest.
_NOT_SETTINGS = {"train.seed", "data.fold", "data.folds", "train.epochs", "data.image_size"}


def mark_settings(runs: list) -> list:
    """``runs`` with the label of each run whose config differs from the others of its label
    (a report over two studies with another learning rate, say) tagged with the keys where it
    differs from the most common value (``towernet optimizer.lr=0.05``), so that runs of other
    settings are never pooled as one model's seeds. Keys some runs do not have (configs
    written by another version) are not compared."""
    by_label: dict = {}
    for r in runs:
        by_label.setdefault(r["model"], []).append(r)
    for group in by_label.values():
        configs = [r.get("config") for r in group]
        if len(group) < 2 or not all(isinstance(c, dict) for c in configs):
            continue
        keys = set()
        for c in configs[1:]:
            keys.update(changed_keys(configs[0], c))
        # a --versus study's unchanged runs (no train.change) hold the plain value
        unchanged = [not c.get("train", {}).get("change") for c in configs]
        for key in sorted(keys - _NOT_SETTINGS - {"train.change"}):
            section, _, name = key.partition(".")
            if not all(name in c.get(section, {}) for c in configs):
                continue
            values = [setting_text(c, key) for c in configs]
            base = {v for v, plain_run in zip(values, unchanged) if plain_run}
            counts = Counter(values)
            plain = (base.pop() if len(base) == 1 and not all(unchanged)
                     else max(sorted(counts), key=counts.get))
            for r, value in zip(group, values):
                if value != plain:
                    r["model"] = f"{r['model']} {key}={value}"
    return runs


def setting_text(cfg: dict, key: str) -> str:
    """``cfg``'s value of ``section.name`` as one word for a label or a run name: a string as
    it is, anything else as compact JSON (``0.05``, ``true``, ``[2,9]``)."""
    section, _, name = key.partition(".")
    value = cfg[section][name]
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return re.sub(r"\s", "_", text)


def as_roots(roots) -> list[Path]:
    """One study folder or several, as a list of paths."""
    return [Path(r) for r in (roots if isinstance(roots, (list, tuple)) else [roots])]


def report_dir_name(run_dir: Path, roots: list) -> str:
    """A run folder as the report names it: relative to its study folder, prefixed with that
    folder's name when the report covers several."""
    root = next(r for r in roots if run_dir == r or r in run_dir.parents)
    rel = str(run_dir.relative_to(root)) if run_dir != root else run_dir.name
    return rel if len(roots) == 1 else f"{root.name}/{rel}"


def _natural(name: str) -> list:
    """A sort key that puts ``-s2`` before ``-s10``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", name)]


def collect_runs(roots) -> list:
    """Every run folder below ``roots`` (one folder or several) with a best.json and
    metrics.csv, as dicts (the table of ``eval.py --compare``)."""
    roots = as_roots(roots)
    for root in roots:
        if not root.is_dir():
            raise UserError(f"folder not found: {root}")
    runs = []
    for r in (run for root in roots for run in read_runs(root)):
        if not r["meta"]:
            continue
        rows, run_dir = r["rows"], r["dir"]
        best = max(rows, key=lambda row: row["eval_acc"])
        runs.append({
            "run": report_dir_name(run_dir, roots),
            "model": r["meta"]["model"], "params": r["meta"].get("params"),
            # a run still training shows "done/planned": its final top-1 is not yet the study's
            "epochs": len(rows) if len(rows) >= r["epochs"] else f"{len(rows)}/{r['epochs']}",
            "best_acc": best["eval_acc"], "best_epoch": best["epoch"],
            "final_acc": rows[-1]["eval_acc"],
            "epoch_seconds": float(np.median([row["epoch_seconds"] for row in rows])),
            "train_images_per_s": float(np.median([row["train_images_per_s"] for row in rows])),
            "curve": [(row["epoch"], row["eval_acc"]) for row in rows],
        })
    runs.sort(key=lambda r: _natural(r["run"]))
    if not runs:
        raise UserError(f"no finished runs (best.json + metrics.csv) below "
                        f"{', '.join(map(str, roots))}")
    return runs
