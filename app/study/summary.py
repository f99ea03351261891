"""A study's statistics: per model, against the baseline, and one change at a time."""
from __future__ import annotations

import numpy as np

from app.study import significance
from app.study.significance import paired_verdict, sample_std
from models import create_model
from models.summary import count_macs, count_params


def summarize(runs: list, costs: dict) -> dict:
    """Per-model statistics and verdicts against the baseline (``towernet`` if present)."""
    by_model = {}
    for run in runs:
        by_model.setdefault(run["model"], []).append(run)
    models = sorted(by_model)
    baseline = "towernet" if "towernet" in by_model else models[0]
    kfold = any(r["fold"] is not None for r in runs)
    unit = "seed x fold runs" if kfold else "seeds"
    base_runs = {(r["seed"], r["fold"]): r for r in by_model[baseline]}
    table = []
    for name in models:
        rs = by_model[name]
        best = [max(row["eval_acc"] for row in r["rows"]) for r in rs]
        final = [r["rows"][-1]["eval_acc"] for r in rs]
        entry = {
            "model": name, "seeds": sorted(r["seed"] for r in rs),
            "folds": sorted(r["fold"] for r in rs) if kfold else None,
            "epochs": [len(r["rows"]) for r in rs],
            "best_mean": float(np.mean(best)), "best_std": sample_std(best),
            "final_mean": float(np.mean(final)), "final_std": sample_std(final),
            "train_images_per_s": float(np.median([row["train_images_per_s"]
                                                   for r in rs for row in r["rows"]])),
            "epoch_seconds": float(np.median([row["epoch_seconds"]
                                              for r in rs for row in r["rows"]])),
            **costs.get(name, {}),
        }
        if name != baseline:
            entry["vs_baseline"] = paired_comparison(rs, base_runs, name, baseline, unit)
        table.append(entry)
    return {"baseline": baseline, "kfold": kfold, "models": table,
            "one_change": one_change_pairs(by_model, unit, baseline)}


def one_change_pairs(by_model: dict, unit: str, baseline: str | None = None) -> list:
    """Each model against the same model with one tag of its label removed: fine-tuned
    (``@source``) against from scratch, bf16 against fp32, a recipe (``+name``) against the
    reference one; and each attention model against its host with the same tags
    (``towernet_simam +small_data`` against ``towernet +small_data``; against ``baseline``
    itself the report's main section already pairs it). Paired by (seed, fold) on final
    top-1, with the first epoch at which the variant reaches the plain run's final accuracy
    (how many epochs a fine-tune needs to pass training from scratch)."""
    candidates = []
    for label in sorted(by_model):
        parts = label.split(" ")
        candidates += [(label, " ".join(parts[:i] + parts[i + 1:]), tag)
                       for i, tag in enumerate(parts[1:], 1)]
    for label in sorted(by_model):
        model, *tags = label.split(" ")
        for other in sorted(by_model):
            host, *host_tags = other.split(" ")
            if host_tags == tags and model.startswith(host + "_") and other != baseline:
                candidates.append((label, other, model[len(host) + 1:]))
    pairs = []
    for label, base, change in candidates:
        if base not in by_model:
            continue
        plain = {(r["seed"], r["fold"]): r for r in by_model[base]}
        matched = [(r, plain[(r["seed"], r["fold"])]) for r in by_model[label]
                   if (r["seed"], r["fold"]) in plain]
        if not matched:
            continue
        reach = [next((row["epoch"] for row in r["rows"]
                       if row["eval_acc"] >= b["rows"][-1]["eval_acc"]), None)
                 for r, b in matched]
        pairs.append({"model": label, "plain": base, "change": change, "epochs_to_plain_final": reach,
                      **paired_comparison([r for r, _ in matched], plain, label, base, unit)})
    return pairs


def paired_comparison(runs: list, base_runs: dict, name: str, baseline: str, unit: str) -> dict:
    """``runs`` against ``base_runs`` (keyed by (seed, fold)): the paired verdict on final
    top-1 and the per-image statistics, over the units both have."""
    diffs = [r["rows"][-1]["eval_acc"] - base_runs[(r["seed"], r["fold"])]["rows"][-1]["eval_acc"]
             for r in runs if (r["seed"], r["fold"]) in base_runs]
    return {**paired_verdict(diffs, name, baseline, unit),
            **per_image_comparison(runs, base_runs, name, baseline)}


def unit_key(run: dict) -> tuple:
    """A run's unit in study order: (seed, fold), a fixed split's runs before any fold."""
    return run["seed"], -1 if run["fold"] is None else run["fold"]


def per_image_comparison(runs: list, base_runs: dict, name: str, baseline: str) -> dict:
    """significance.compare on the images both runs of each (seed, fold) predicted ({} if none)."""
    a_units, b_units = [], []
    for r in sorted(runs, key=unit_key):
        base = base_runs.get((r["seed"], r["fold"]))
        if not r["predictions"] or not base or not base["predictions"]:
            continue
        common = sorted(set(r["predictions"]) & set(base["predictions"]))
        if common:
            a_units.append([r["predictions"][p] for p in common])
            b_units.append([base["predictions"][p] for p in common])
    if not a_units:
        return {}
    return significance.compare(a_units, b_units, name, baseline)


def model_costs(runs: list) -> dict:
    """Parameters and GMACs per model at the study's image size."""
    costs = {}
    for run in runs:
        if run["model"] not in costs:
            net = create_model(run["arch"], num_classes=run["num_classes"])
            costs[run["model"]] = {"params": count_params(net),
                                   "gmacs": count_macs(net, run["image_size"]) / 1e9}
    return costs
