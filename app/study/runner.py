"""Run a study: every model x seed (x fold) trained into OUTPUT/<run name>/, then the report.

A finished run is skipped and an interrupted one resumed, so re-running the same command
continues a study. Several processes (or machines) on one output folder share the work
through the run folders' locks.
"""
from __future__ import annotations

import time
from pathlib import Path

from app.build.network import check_model_name
from app.build.pretrained import check_source
from app.config.load import load_config, parse_override
from app.config.resume import changed_keys
from app.data.folds import write_fold_split
from app.data.split import split_mismatch
from app.run.folder import RunFolder
from app.run.lock import RunBusy
from app.study.parallel import run_side_by_side
from app.study.report import to_markdown, write_report
from app.study.runs import read_runs, resumed_config, run_label, setting_text, study_run_name
from app.train import trainer
from app.util.errors import UserError


def run_study(config_file, models: list, seeds: list, overrides: list,
              folds: int | None = None, recipe: str | None = None, jobs: int = 1,
              margin: float | None = None, versus: tuple | None = None) -> Path:
    """Train every model x seed into OUTPUT/<model>-s<seed>/, then write the report.

    With ``folds`` K, the split's train and eval images are pooled and every seed is a new
    stratified K-fold partition (app/data/folds.py, fold splits under OUTPUT/folds/): run
    (seed, fold k) trains on the other folds and evaluates on fold k, in
    OUTPUT/<model>-s<seed>-f<k>/. A run that finished is skipped; one that was interrupted
    is resumed, so re-running the same command continues a study and returns at once when
    it is complete. The ETA is printed after the first run trained here.

    ``jobs`` > 1 trains that many runs at once, each in a process of its own with its share
    of the cores (app/study/parallel.py). ``versus`` (:func:`parse_versus`) trains every run
    a second time with one change, so that the report decides the change.
    """
    units = [(seed, fold) for seed in seeds for fold in (range(folds) if folds else [None])]
    output, plan = plan_study(config_file, models, units, overrides, folds, recipe, jobs, versus)
    train_planned(plan, output, jobs)
    summary = write_report(output, margin=margin)
    print(to_markdown(summary, read_runs(output)))
    print(f"wrote {output / 'report.md'}, report.json, study_curves.png")
    return output


def parse_versus(text: str, overrides: list, recipe: str | None) -> tuple:
    """``--versus`` as (overrides, recipe) of the changed runs: ``recipe=NAME`` (a recipe or
    a recipe file), ``pretrained=SOURCE``, or any ``section.key=value``. How the changed runs
    are told apart is settled by :func:`plan_study` (:func:`_versus_side`)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not value.strip() or (key not in ("recipe", "pretrained") and "." not in key):
        raise UserError(f"--versus takes one change as key=value (train.amp=bf16, "
                        f"recipe=small_data, pretrained=imagenet, optimizer.lr=0.05); got {text!r}")
    if key == "train.change":
        raise UserError("--versus sets train.change itself: give the setting to change")
    if key == "recipe":
        return list(overrides), value.strip()
    change = ("model.pretrained", value.strip()) if key == "pretrained" else parse_override(text)
    return [(k, v) for k, v in overrides if k != change[0]] + [change], recipe


def plan_study(config_file, models: list, units: list, overrides: list, folds: int | None,
               recipe: str | None, jobs: int = 1, versus: tuple | None = None) -> tuple:
    """(output folder, [(name, cfg, run folder, state), ...]): every run of ``units``
    ((seed, fold) pairs, fold None on the fixed split) in that order (seed-major: a study cut
    short still has complete pairs to compare), each existing one checked against this
    command before any trains. With ``versus`` ((overrides, recipe) from
    :func:`parse_versus`) each unit also holds every model with that change, after the
    models as they are."""
    for model in models:
        check_model_name(model)
    if folds is not None and folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}")
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    base = (list(overrides), recipe)
    # per model: a change may alter one model's config and not another's (its default already)
    sides = [{model: base for model in models}]
    if versus:
        sides.append({model: _versus_side(config_file, model, [base, versus]) for model in models})
    output, plan = None, []
    for seed, fold in units:
        for side in sides:
            for model in models:
                side_overrides, side_recipe = side[model]
                cfg = load_config(config_file, model, side_overrides + [("train.seed", seed)],
                                  side_recipe)
                name = study_run_name(model, seed, cfg, fold)
                cfg["output"]["name"] = name
                if fold is not None:
                    split_dir = write_fold_split(cfg["data"]["root"],
                                                 Path(cfg["output"]["dir"]) / "folds" / f"s{seed}-f{fold}",
                                                 folds, fold, seed)
                    cfg["data"].update(root=str(split_dir), fold=fold, folds=folds)
                output = Path(cfg["output"]["dir"])
                run = RunFolder(output / name)
                state = run.read_state()
                if run.path.exists() and not state:
                    raise UserError(f"{run} exists but is not a run folder; move it away")
                if state:
                    _check_same_settings(run, cfg, state)
                if cfg["model"]["pretrained"] and state.get("status") != "finished":
                    check_source(cfg["model"]["pretrained"], model)
                plan.append((name, cfg, run, state))
    return output, plan


def _versus_side(config_file, model: str, sides: list) -> tuple:
    """The changed side of a ``--versus`` study. A precision, recipe or starting weights shows
    in the runs' labels and names as it is; any other change that alters what a run computes
    is written into the changed runs' ``train.change`` (``optimizer.lr=0.05``), which names
    them (``towernet-optimizer.lr=0.05-s0``) and makes them the marked side in reports. A change
    that alters nothing a run computes is one line."""
    base, changed = (load_config(config_file, model, o, r) for o, r in sides)
    if run_label(base) != run_label(changed):
        return sides[1]
    keys = changed_keys(base, changed)
    if not keys:
        raise UserError(f"--versus changes nothing a run computes ({model}'s config is the same "
                        f"either way, up to where and how fast it runs)")
    change = ",".join(f"{key}={setting_text(changed, key)}" for key in keys)
    return [*sides[1][0], ("train.change", change)], sides[1][1]


def train_planned(plan: list, output: Path, jobs: int = 1) -> int:
    """Train the runs of ``plan`` that have not finished: one after the other, or ``jobs``
    side by side; returns how many this process trained to the end. A run that stops (a
    non-finite loss) or that another process trains is left out with a line; Ctrl-C stops
    the study."""
    total, trained, pending = len(plan), 0, []
    for i, (name, cfg, run, state) in enumerate(plan):
        if state.get("status") == "finished":
            print(f"{name}: finished earlier, skipped")
            continue
        if jobs > 1:
            pending.append((name, cfg, run.path if state else None))
            continue
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            if state:
                trainer.train(resumed_config(run, cfg), run.path)
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
        trained += run_side_by_side(pending, output, jobs)
    return trained


def _check_same_settings(run: RunFolder, cfg: dict, state: dict) -> None:
    """Refuse a study command whose settings or split differ from those an existing run of
    the same name was trained with: skipping or resuming that run would report it as this
    command's (a 30-epoch run in a study asked for 60 epochs, or a run trained on another
    split of the data)."""
    root, recorded = cfg["data"]["root"], state.get("data_fingerprint")
    why = recorded and split_mismatch(root, recorded)
    if why:
        raise UserError(f"{run} was trained on a split made by data_tools/split.py; {root} "
                        f"{why}; --data the split its runs were trained on, or give this study "
                        f"another --output")
    run_cfg = run.read_config()
    changed = changed_keys(run_cfg, cfg)
    if changed:
        key = changed[0]
        section, _, field = key.partition(".")
        more = f" and {len(changed) - 1} more setting(s)" if len(changed) > 1 else ""
        raise UserError(f"{run} was trained with {key}={run_cfg[section].get(field)!r}, this "
                        f"command asks for {cfg[section].get(field)!r}{more}; give this study "
                        f"another --output, or the run's own settings to continue it")
