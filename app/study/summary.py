"""A study's statistics: per model, against the baseline, and one change at a time."""
from __future__ import annotations

import numpy as np

from app.study import significance
from app.study.decide import DEFAULT_MARGIN, Plan, decide, p_outperform
from app.study.significance import paired_verdict, sample_std
from models import create_model
from models.attention import list_attentions
from models.summary import count_macs, count_params


def summarize(runs: list, costs: dict, margin: float = DEFAULT_MARGIN, plan: Plan = Plan()) -> dict:
    """Per-model statistics, verdicts against the baseline (``towernet`` if present), one
    change at a time, and the decisions with ``margin`` (points) under ``plan``."""
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
        rs = sorted(by_model[name], key=lambda r: (r["seed"], r["fold"] if r["fold"] is not None else -1))
        best = [max(row["eval_acc"] for row in r["rows"]) for r in rs]
        final = [r["rows"][-1]["eval_acc"] for r in rs]
        entry = {
            "model": name, "seeds": [r["seed"] for r in rs],  # (seed, fold) order: the two lists pair up
            "folds": [r["fold"] for r in rs] if kfold else None,
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
    summary = {"baseline": baseline, "kfold": kfold, "models": table,
               "one_change": one_change_pairs(by_model, unit, baseline)}
    summary["decisions"] = decisions(summary, margin, plan)
    summary["decision_rule"] = {"margin_pp": margin, "min_units": plan.min_units,
                                "max_units": plan.max_units, "confidence": plan.confidence,
                                "looks": plan.describe()}
    return summary


def attention_change(label: str, base: str) -> str | None:
    """The attention module ``label`` adds to ``base`` with every other tag the same
    (``towernet_simam +small_data`` to ``towernet +small_data``: simam), or None."""
    model, *tags = label.split(" ")
    host, *host_tags = base.split(" ")
    change = model[len(host) + 1:] if model.startswith(host + "_") else None
    return change if tags == host_tags and change in list_attentions() else None


def decisions(summary: dict, margin: float, plan: Plan) -> list:
    """One decision per comparison: each model against its host (``attention``: what a
    study ``--until-decided`` waits for), against the same model without one setting
    (``setting``), and any other model against the baseline (``baseline``)."""
    rows = {m["model"]: m for m in summary["models"]}
    compared = [(m["model"], summary["baseline"], m["vs_baseline"], "baseline")
                for m in summary["models"] if "vs_baseline" in m]
    settings = [(p["model"], p["plain"], p, "setting") for p in summary["one_change"]]
    pairs = {(model, against) for model, against, _, _ in settings}
    # a model one setting away from the baseline is that setting's row, not a second one
    compared = [c for c in compared if (c[0], c[1]) not in pairs] + settings
    out = []
    for model, against, stats, kind in compared:
        change = attention_change(model, against)
        kind = "attention" if change else kind
        gaps = stats["diffs_pp"]
        out.append({"model": model, "against": against, "kind": kind,
                    "change": change or stats.get("change"),
                    **decide(gaps, margin, plan).as_dict(),
                    "p_outperform": p_outperform(gaps, plan.confidence),
                    "cost": relative_cost(rows[model], rows[against])})
    return out


def relative_cost(entry: dict, base: dict) -> dict:
    """What ``entry``'s model costs against ``base``'s: train images/s, parameters, GMACs."""
    def ratio(key):
        return entry[key] / base[key] if entry.get(key) and base.get(key) else None
    return {"train_images_per_s": ratio("train_images_per_s"), "params": ratio("params"),
            "gmacs": ratio("gmacs")}


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
        matched = [(r, plain[(r["seed"], r["fold"])]) for r in sorted(by_model[label], key=unit_key)
                   if (r["seed"], r["fold"]) in plain]  # in unit order, as the differences are
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
    top-1 and the per-image statistics, over the units both have, in unit order (seed, then
    fold: the order a study trains them, which decisions replay)."""
    paired = sorted((r for r in runs if (r["seed"], r["fold"]) in base_runs), key=unit_key)
    diffs = [r["rows"][-1]["eval_acc"] - base_runs[(r["seed"], r["fold"])]["rows"][-1]["eval_acc"]
             for r in paired]
    return {**paired_verdict(diffs, name, baseline, unit),
            "units": [[r["seed"], r["fold"]] for r in paired],
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
