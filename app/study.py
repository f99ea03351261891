"""Multi-seed studies: train every model x seed, then report whether the gaps are real.

A study folder holds one run per ``<model>-s<seed>``; :func:`write_report` reads every run
below it (any folder with config.yaml + metrics.csv) and writes report.md, report.json,
study_curves.png. The verdict for each model against the baseline uses the per-seed
difference of *final* eval top-1 (the model at the end of the schedule: nothing picked
on the eval set), with a paired t interval over seeds.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import yaml

from app.atomic import atomic_write_json, atomic_write_text
from app.callbacks import read_metrics
from app.checkpoint import read_json
from app.config import complete_run_config
from app.errors import UserError
from app.runlock import RunBusy

# Two-sided 95% Student t quantiles by degrees of freedom (df > 30: normal).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}


def t95(df: int) -> float:
    if df > 30:
        return 1.96
    return T95.get(df) or T95[min(k for k in T95 if k >= df)]


def study_run_name(model: str, seed: int, cfg: dict | None = None, fold: int | None = None) -> str:
    """``<model>-s<seed>`` (``-f<fold>`` in a K-fold study); a pretrained run is
    ``<model>@<source tag>-s<seed>`` (see run_label)."""
    label = run_label(cfg) if cfg else model
    name = label.replace(" @", "@").replace(" +", "+").replace(" ", "-")
    return f"{name}-s{seed}" + ("" if fold is None else f"-f{fold}")


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
    tag = source if source == "imagenet" else (
        path.parent.name if path.stem in ("best", "last") else path.stem)
    return f"{name} @{tag}"


def read_predictions(path) -> dict | None:
    """predictions.csv as {relative path: correct (bool)}, or None when the run has none."""
    import csv

    if not Path(path).is_file():
        return None
    with open(path, newline="") as f:
        return {row["path"]: row["label"] == row["pred"] for row in csv.DictReader(f)}


def read_runs(root) -> list:
    """Every run below ``root`` (a folder with config.yaml + metrics.csv, finished or not):
    dir, model (its report label, see :func:`run_label`), arch (the model name), seed,
    epochs, image_size, per-epoch rows, best.json as ``meta`` ({} if none)."""
    runs = []
    for cfg_path in sorted(Path(root).rglob("config.yaml")):
        rows = read_metrics(cfg_path.parent / "metrics.csv")
        if not rows:
            continue
        try:
            cfg = yaml.safe_load(cfg_path.read_text())
        except (OSError, yaml.YAMLError):
            cfg = None
        try:  # a truncated file can still be YAML: every section must be there, and the keys read here
            if not complete_run_config(cfg):
                raise KeyError("a section")
            label, fields = run_label(cfg), {"arch": cfg["model"]["name"], "seed": cfg["train"]["seed"],
                                             "fold": cfg["data"].get("fold"), "epochs": cfg["train"]["epochs"],
                                             "image_size": cfg["data"]["image_size"]}
        except (KeyError, TypeError, AttributeError):
            raise UserError(f"{cfg_path} is damaged; restore it (the run's resolved config) or "
                            f"move the run folder out of {root}")
        hint = f"restore it or move the run folder out of {root}"
        state_path = cfg_path.parent / "state.json"
        state = read_json(state_path, hint) if state_path.is_file() else {}
        best_path = cfg_path.parent / "best.json"
        best = read_json(best_path, hint) if best_path.is_file() else {}
        runs.append({"dir": cfg_path.parent, "model": label, **fields,
                     "predictions": read_predictions(cfg_path.parent / "predictions.csv"),
                     "rows": rows, "num_classes": best.get("num_classes", 16), "meta": best,
                     "finished": state.get("status") == "finished"})
    return runs


def paired_verdict(diffs: list, name: str, baseline: str, unit: str = "seeds") -> dict:
    """Mean paired difference (percentage points) over seeds (or seed x fold runs, ``unit``),
    its 95% t interval, and plain words."""
    d = np.asarray(diffs, dtype=float) * 100
    out = {"n": len(d), "mean_pp": float(d.mean()) if len(d) else None, "diffs_pp": d.tolist()}
    if len(d) < 2:
        out["verdict"] = (f"{len(d)} paired {unit}: too few to tell {name} from {baseline} "
                          f"beyond seed noise; run at least 3 seeds.")
        return out
    if np.ptp(d) < 1e-9:
        # Every unit moved by the same amount (on a few hundred eval images, one image more or
        # less per seed is common): the spread is measured as 0 and the t interval would be a
        # point, calling any such gap "larger than the run-to-run spread". No interval.
        out["verdict"] = (f"{name} - {baseline} = {d.mean():+.1f} points in each of the {len(d)} "
                          f"{unit}: with no spread between them the t interval cannot be "
                          f"computed, so the seeds alone cannot tell this gap from noise "
                          f"(see the per-image statistics, or run more {unit}).")
        return out
    half = t95(len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    lo, hi = d.mean() - half, d.mean() + half
    out.update(ci95_pp=[float(lo), float(hi)])
    if lo > 0 or hi < 0:
        word = "better" if lo > 0 else "worse"
        out["verdict"] = (f"{name} is {word} than {baseline} by {abs(d.mean()):.1f} points "
                          f"(95% interval {lo:+.1f} to {hi:+.1f} over {len(d)} {unit}): the gap "
                          f"is larger than the run-to-run spread.")
    else:
        out["verdict"] = (f"no clear difference: {name} - {baseline} = {d.mean():+.1f} points, "
                          f"but the 95% interval ({lo:+.1f} to {hi:+.1f}) over {len(d)} {unit} "
                          f"includes 0, so the gap is within run-to-run noise.")
    return out


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
            "best_mean": float(np.mean(best)), "best_std": _std(best),
            "final_mean": float(np.mean(final)), "final_std": _std(final),
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


def per_image_comparison(runs: list, base_runs: dict, name: str, baseline: str) -> dict:
    """app.stats.compare on the images both runs of each (seed, fold) predicted ({} if none)."""
    from app import stats

    a_units, b_units = [], []
    for r in sorted(runs, key=lambda r: (r["seed"], r["fold"] if r["fold"] is not None else -1)):
        base = base_runs.get((r["seed"], r["fold"]))
        if not r["predictions"] or not base or not base["predictions"]:
            continue
        common = sorted(set(r["predictions"]) & set(base["predictions"]))
        if common:
            a_units.append([r["predictions"][p] for p in common])
            b_units.append([base["predictions"][p] for p in common])
    if not a_units:
        return {}
    return stats.compare(a_units, b_units, name, baseline)


def _std(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def model_costs(runs: list) -> dict:
    """Parameters and GMACs per model at the study's image size."""
    from models import create_model
    from models.summary import count_macs, count_params

    costs = {}
    for run in runs:
        if run["model"] not in costs:
            net = create_model(run["arch"], num_classes=run["num_classes"])
            costs[run["model"]] = {"params": count_params(net),
                                   "gmacs": count_macs(net, run["image_size"]) / 1e9}
    return costs


def _units_text(m: dict) -> str:
    """A table cell for a model's runs: ``0,1,2`` (seeds) or ``s0 f0,1,2,3,4`` (seed, folds)."""
    if not m.get("folds"):
        return ",".join(map(str, m["seeds"]))
    by_seed: dict = {}
    for seed, fold in zip(m["seeds"], m["folds"]):
        by_seed.setdefault(seed, []).append(fold)
    return "; ".join(f"s{seed} f{','.join(map(str, sorted(folds)))}"
                     for seed, folds in sorted(by_seed.items()))


def to_markdown(summary: dict, runs: list) -> str:
    kfold = summary.get("kfold", False)
    over, paired, each = (("seed x fold runs", "seed and fold", "per-run (seed, fold)") if kfold
                          else ("seeds", "seed", "per-seed"))
    lines = ["# Study report", "",
             f"{len(runs)} runs; baseline: `{summary['baseline']}`. Eval top-1 as "
             f"mean ± std over {over}; `best` is the best epoch (chosen on the eval split, "
             "so optimistic), `final` the last epoch.", "",
             f"| model | {'runs' if kfold else 'seeds'} | best top-1 | final top-1 | params | GMACs "
             "| train img/s | epoch s |", "|---|---|---|---|---|---|---|---|"]
    for m in summary["models"]:
        lines.append(f"| {m['model']} | {_units_text(m)} | "
                     f"{m['best_mean']:.4f} ± {m['best_std']:.4f} | "
                     f"{m['final_mean']:.4f} ± {m['final_std']:.4f} | "
                     f"{m.get('params', 0):,} | {m.get('gmacs', 0):.3f} | "
                     f"{m['train_images_per_s']:.1f} | {m['epoch_seconds']:.1f} |")
    lines += ["", f"## Against `{summary['baseline']}` (paired by {paired}, final top-1)", ""]
    for m in summary["models"]:
        if "vs_baseline" in m:
            v = m["vs_baseline"]
            diffs = ", ".join(f"{d:+.1f}" for d in v["diffs_pp"])
            lines.append(f"- **{m['model']}**: {each} differences [{diffs}] points. "
                         f"{v['verdict']}")
            if "bootstrap_ci95_pp" in v:
                po = v["p_outperform"]
                per_unit = ", ".join(f"{p:.3g}" for p in v["mcnemar_p_per_unit"])
                lines.append(f"  - per image ({v['bootstrap_units']} seed/fold units, "
                             f"{v['bootstrap_images']} paired predictions): "
                             f"{v['verdict_bootstrap']} P({m['model']} > {summary['baseline']}) "
                             f"= {po['p']:.2f} (95% CI {po['ci95'][0]:.2f}-{po['ci95'][1]:.2f}); "
                             f"discordant images [baseline only, model only] = {v['discordant']}; "
                             f"McNemar p = {v['mcnemar_p']:.3g} pooled, per unit [{per_unit}]; "
                             f"minimum detectable difference {v['mde_pp']:.1f} points.")
    if summary.get("one_change"):
        lines += ["", f"## One change at a time (paired by {paired}, final top-1)", "",
                  "Each model against the same model without one of its tags: `@source` "
                  "(fine-tuned) vs from scratch, `bf16` vs float32, `+recipe` vs the reference "
                  "recipe; and each attention model against its host with the same tags "
                  "(`towernet_simam +small_data` vs `towernet +small_data`). *Epoch reached*: "
                  "the first epoch at which the changed run's eval top-1 reached the plain "
                  "run's final top-1 (— never).", "",
                  f"| model | against | {each} differences (points) | 95% t interval "
                  "| 95% bootstrap CI | epoch reached |", "|---|---|---|---|---|---|"]
        for p in summary["one_change"]:
            t_ci = (f"{p['ci95_pp'][0]:+.1f} to {p['ci95_pp'][1]:+.1f}" if "ci95_pp" in p else "—")
            boot = (f"{p['bootstrap_ci95_pp'][0]:+.1f} to {p['bootstrap_ci95_pp'][1]:+.1f}"
                    if "bootstrap_ci95_pp" in p else "—")
            reached = ", ".join("—" if e is None else str(e) for e in p["epochs_to_plain_final"])
            lines.append(f"| {p['model']} | {p['plain']} | "
                         f"{', '.join(f'{d:+.1f}' for d in p['diffs_pp'])} | {t_ci} | {boot} "
                         f"| {reached} |")
        lines += [""] + [f"- {p['verdict']}" for p in summary["one_change"]]
    lines += ["", "Per-image statistics: a two-level paired bootstrap (2000 resamples of the "
              "seed/fold units, then of the images within each), P(A > B) over the units "
              "(ties half) with a bootstrap interval, McNemar's exact test on the pooled "
              "discordant images, and the minimum detectable difference at 80% power "
              "(2.8 bootstrap standard errors)."]
    if kfold:
        lines += ["", "The t interval over seed x fold runs treats the folds as independent "
                  "samples; their training sets overlap, so it is optimistic (Nadeau & Bengio, "
                  "2003). The bootstrap resamples folds and the images within them."]
    lines += ["", "![eval accuracy per epoch](study_curves.png)", ""]
    return "\n".join(lines)


def write_report(roots, out=None) -> dict:
    """Write report.md, report.json and study_curves.png for every run below ``roots`` (one
    folder or several, e.g. a from-scratch study and a fine-tuning study) into ``out``
    (default: the first folder)."""
    roots = as_roots(roots)
    everything = [r for folder in roots for r in read_runs(folder)]
    if not everything:
        raise UserError(f"no runs with metrics.csv below {', '.join(map(str, roots))}")
    return write_runs_report(everything, roots, Path(out) if out is not None else roots[0])


def write_runs_report(everything: list, roots: list, root: Path) -> dict:
    """:func:`write_report` for runs already read (:func:`read_runs`) from ``roots``."""
    from app import report

    everything = mark_budgets(everything)
    # Only runs that trained all their epochs enter the statistics: a run still going (or
    # stopped) would pull its model's mean towards an early epoch.
    runs = [r for r in everything if len(r["rows"]) >= r["epochs"]]
    pending = [r for r in everything if len(r["rows"]) < r["epochs"]]
    if not runs:
        raise UserError(f"no run below {', '.join(map(str, roots))} has finished its epochs yet "
                        f"({len(pending)} in progress or stopped)")
    summary = summarize(runs, model_costs(runs))
    summary["runs"] = [{"dir": report_dir_name(r["dir"], roots), "model": r["model"],
                        "seed": r["seed"], "fold": r["fold"], "finished": r["finished"],
                        "counted": len(r["rows"]) >= r["epochs"],
                        "eval_acc": [row["eval_acc"] for row in r["rows"]]} for r in everything]
    report.plot_study_curves(runs, root / "study_curves.png")
    atomic_write_json(root / "report.json", summary)
    text = to_markdown(summary, runs)
    if pending:
        text += ("\nNot counted (epochs not all trained yet, or stopped): " + ", ".join(
            f"`{report_dir_name(r['dir'], roots)}` ({len(r['rows'])}/{r['epochs']})"
            for r in pending) + "\n")
    atomic_write_text(root / "report.md", text)
    return summary


def mark_budgets(runs: list) -> list:
    """``runs`` with the label of each run trained for another number of epochs or at another
    image size than most of them tagged with it (``towernet +small_data 60ep``, ``... 160px``),
    so that one model at two budgets is two rows, never pooled, and :func:`one_change_pairs`
    pairs them like any other tag. Of two values equally common, the smaller is the plain one."""
    from collections import Counter

    runs = [dict(r) for r in runs]
    for key, unit in (("epochs", "ep"), ("image_size", "px")):
        counts = Counter(r[key] for r in runs)
        plain = max(sorted(counts), key=counts.get)
        for r in runs:
            if r[key] != plain:
                r["model"] = f"{r['model']} {r[key]}{unit}"
    return runs


def as_roots(roots) -> list[Path]:
    """One study folder or several, as a list of paths."""
    return [Path(r) for r in (roots if isinstance(roots, (list, tuple)) else [roots])]


def report_dir_name(run_dir: Path, roots: list) -> str:
    """A run folder as the report names it: relative to its study folder, prefixed with that
    folder's name when the report covers several."""
    root = next(r for r in roots if run_dir == r or r in run_dir.parents)
    rel = str(run_dir.relative_to(root)) if run_dir != root else run_dir.name
    return rel if len(roots) == 1 else f"{root.name}/{rel}"


def run_study(config_file, models: list, seeds: list, overrides: list,
              folds: int | None = None, recipe: str | None = None, jobs: int = 1) -> Path:
    """Train every model x seed into OUTPUT/<model>-s<seed>/, then write the report.

    With ``folds`` K, the split's train and eval images are pooled and every seed is a new
    stratified K-fold partition (app/folds.py, fold splits under OUTPUT/folds/): run
    (seed, fold k) trains on the other folds and evaluates on fold k, in
    OUTPUT/<model>-s<seed>-f<k>/. A run that finished is skipped; one that was interrupted
    is resumed, so re-running the same command continues a study and returns at once when
    it is complete. The ETA is printed after the first run trained here.

    ``jobs`` > 1 trains that many runs at once, each in a process of its own with its share
    of the cores (:func:`_run_side_by_side`).
    """
    import time

    from app.folds import write_fold_split
    from app import trainer
    from app.config import load_config
    from app.engine import check_model_name

    for model in models:
        check_model_name(model)
    output = None
    if folds is not None and folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}")
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    units = [(seed, fold) for seed in seeds for fold in (range(folds) if folds else [None])]
    total, trained = len(units) * len(models), 0
    plan = []  # (name, cfg, run_dir, state): every run of the study, checked before any trains
    # Seed-major order: a study cut short still has complete pairs to compare.
    for seed, fold in units:
        for model in models:
            cfg = load_config(config_file, model, list(overrides) + [("train.seed", seed)], recipe)
            name = study_run_name(model, seed, cfg, fold)
            cfg["output"]["name"] = name
            if fold is not None:
                split_dir = write_fold_split(cfg["data"]["root"],
                                             Path(cfg["output"]["dir"]) / "folds" / f"s{seed}-f{fold}",
                                             folds, fold, seed)
                cfg["data"].update(root=str(split_dir), fold=fold, folds=folds)
            output = Path(cfg["output"]["dir"])
            run_dir = output / name
            state = trainer.load_state(run_dir)
            if run_dir.exists() and not state:
                raise UserError(f"{run_dir} exists but is not a run folder; move it away")
            if state:
                _check_same_settings(run_dir, cfg, state)
            plan.append((name, cfg, run_dir, state))
    pending = []  # (name, cfg, run_dir or None) for --jobs
    for i, (name, cfg, run_dir, state) in enumerate(plan):
        if state.get("status") == "finished":
            print(f"{name}: finished earlier, skipped")
            continue
        if jobs > 1:
            pending.append((name, cfg, run_dir if state else None))
            continue
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            if state:
                trainer.train(resumed_config(run_dir, cfg), run_dir)
            else:
                trainer.train(cfg, exact_name=True)
            trained += 1
            if trained == 1:  # the runs after this one, at this run's time each
                left = total - (i + 1)
                took = time.perf_counter() - started
                print(f"study ETA: {left} more runs x {took:.0f} s (this run's "
                      f"{cfg['train']['epochs']} epochs) ~ {left * took / 60:.0f} min",
                      flush=True)
        except trainer.RunStopped as e:
            if e.exit_code == 130:
                raise
            print(f"{name}: {e}; the study goes on without it")
        except RunBusy as e:
            print(f"{name}: skipped: {e}", flush=True)
    if pending:
        _run_side_by_side(pending, output, jobs)
    summary = write_report(output)
    print(to_markdown(summary, read_runs(output)))
    print(f"wrote {output / 'report.md'}, report.json, study_curves.png")
    return output


def resumed_config(run_dir, cfg: dict) -> dict:
    """The config an interrupted study run resumes on: the run's own, read from the split
    the study command names (the data may have moved since; _check_same_settings has made
    sure it is the same split)."""
    from app.trainer import resume_config

    run_cfg = resume_config(run_dir)
    run_cfg["data"]["root"] = cfg["data"]["root"]
    return run_cfg


def _check_same_settings(run_dir: Path, cfg: dict, state: dict) -> None:
    """Refuse a study command whose settings or split differ from those an existing run of
    the same name was trained with: skipping or resuming that run would report it as this
    command's (a 30-epoch run in a study asked for 60 epochs, or a run trained on another
    split of the data)."""
    from app.config import changed_keys
    from app.data import split_mismatch
    from app.trainer import resume_config

    root, recorded = cfg["data"]["root"], state.get("data_fingerprint")
    why = recorded and split_mismatch(root, recorded)
    if why:
        raise UserError(f"{run_dir} was trained on a split made by data_tools/split.py; {root} "
                        f"{why}; --data the split its runs were trained on, or give this study "
                        f"another --output")
    run_cfg = resume_config(run_dir)
    changed = changed_keys(run_cfg, cfg)
    if changed:
        key = changed[0]
        section, _, field = key.partition(".")
        more = f" and {len(changed) - 1} more setting(s)" if len(changed) > 1 else ""
        raise UserError(f"{run_dir} was trained with {key}={run_cfg[section].get(field)!r}, this "
                        f"command asks for {cfg[section].get(field)!r}{more}; give this study "
                        f"another --output, or the run's own settings to continue it")


def _run_side_by_side(pending: list, output: Path, jobs: int) -> None:
    """Train ``pending`` runs ``jobs`` at a time, each in a spawned process with ``cores //
    jobs`` threads (unless ``train.threads`` is set), its output in OUTPUT/logs/<run>.log.

    Small networks use two cores poorly from one process: the loader, the augmentation and
    Python's op dispatch run on one core while the other waits. Two single-thread runs side
    by side trained 1.25x (reference recipe) to 1.39x (small_data) faster per epoch than one
    after the other on two cores (bench/README.md). A run's thread count is recorded in its
    config.yaml. Ctrl-C stops every running run at its last finished epoch (re-running the
    command resumes them).
    """
    import concurrent.futures as cf
    import multiprocessing
    import time

    from app.engine import available_cores

    logs = output / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    threads = max(1, available_cores() // jobs)
    started, finished, errors = time.perf_counter(), 0, []
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: Paddle is not fork-safe
    stop = context.Event()  # set on Ctrl-C: runs already handed to a worker do not start
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_worker_init,
                                initargs=(stop,)) as pool:
        futures = {}
        for name, cfg, run_dir in pending:
            log = logs / f"{name}.log"
            futures[pool.submit(_run_one, cfg, run_dir and str(run_dir), str(log), threads)] = name
            print(f"== {name} ({'resumed, ' if run_dir else ''}log: {log})", flush=True)
        try:
            for future in cf.as_completed(futures):
                name = futures[future]
                code, message = future.result()
                finished += 1
                if code == -1:
                    continue
                if code == 0:
                    print(f"{name}: {message}", flush=True)
                    if finished == 1 and len(futures) > 1:
                        left, took = len(futures) - 1, time.perf_counter() - started
                        print(f"study ETA: {left} more runs, {jobs} at a time, "
                              f"~{left * took / jobs / 60:.0f} min", flush=True)
                elif code == 130:
                    raise KeyboardInterrupt
                elif code == BUSY:
                    print(f"{name}: {message}", flush=True)
                elif code == 2:  # a UserError: as one after the other, the study stops with it
                    errors.append(f"{name}: {message}")
                    stop.set()
                else:
                    print(f"{name}: {message}; the study goes on without it", flush=True)
        except KeyboardInterrupt:
            stop.set()
            for future in futures:
                future.cancel()
            from app import trainer

            raise trainer.RunStopped("study interrupted: every running run stopped at its last "
                                     "finished epoch; re-run the same command to resume", 130)
    if errors:
        raise UserError(errors[0])


_STOP = None  # the study's stop event, in a worker process
BUSY = 75  # _run_one's code for a run that another process is training (EX_TEMPFAIL)


def _worker_init(stop) -> None:
    global _STOP
    _STOP = stop


def _run_one(cfg: dict, run_dir: str | None, log: str, threads: int) -> tuple[int, str]:
    """One study run in a worker process: (exit code, one line), never an exception."""
    import os

    from app import trainer

    if _STOP is not None and _STOP.is_set():
        return -1, "not started: the study is stopping"

    with open(log, "a", buffering=1) as f:
        os.dup2(f.fileno(), 1)  # Paddle's C++ logs too
        os.dup2(f.fileno(), 2)
        try:
            if run_dir is not None:
                cfg = resumed_config(run_dir, cfg)
            if not cfg["train"]["threads"]:
                cfg["train"]["threads"] = threads
            path = trainer.train(cfg, run_dir, exact_name=True)
            rows = read_metrics(Path(path) / "metrics.csv")
            n = cfg["train"]["threads"]
            return 0, (f"finished, final eval top-1 {float(rows[-1]['eval_acc']):.4f} "
                       f"({len(rows)} epochs, {n} thread{'s' if n > 1 else ''})")
        except trainer.RunStopped as e:
            return e.exit_code, str(e)
        except KeyboardInterrupt:
            return 130, "interrupted"
        except RunBusy as e:  # another process trains it: skipped, the study goes on
            return BUSY, f"skipped: {e}"
        except UserError as e:
            return 2, str(e)
