"""A study that stops when it has its answer: ``train.py --models ... --until-decided``.

It trains whole units one after another -- unit u is every model at seed u // K, fold u % K
(K folds), or at seed u on the fixed split -- so the design stays paired whenever it stops.
Before each unit it re-decides (app/study/decide.py) on the units every model has finished,
and stops when

- every comparison of an attention module with its host is decided, and with ``--versus``
  every comparison of a model with and without the change (other comparisons are reported,
  not waited for; a study with neither waits for all of its comparisons); with
  ``--harmless`` the change's comparisons are also answered once a loss of D is ruled out,
- the planned maximum of units is reached, or
- the next unit would not fit the budget: machine time recorded in the study's ledger
  (app/study/ledger.py) across every invocation and process, the next unit estimated from the
  units measured so far (else from the runs' epoch times).

Interrupted, it resumes like any study: finished runs are skipped, an interrupted one resumes.
Several processes (or machines sharing the output folder) can run the same command: the run
locks give each run to one of them, decisions only ever count units every model has
finished, and when the study is decided each process finishes the runs it holds and stops.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from app.config.load import load_config
from app.study.decide import Plan, loss_ruled_out, plan_change_note, points
from app.study.ledger import Ledger, unit_estimate
from app.study.report import decision_line, decisions_table, write_report
from app.study.runner import plan_study, train_planned
from app.study.runs import mark_budgets, read_runs
from app.study.summary import summarize
from app.util.errors import UserError


def unit_of(index: int, folds: int | None) -> tuple:
    """(seed, fold) of unit ``index``: seed-major over the folds, or (index, None)."""
    return (index // folds, index % folds) if folds else (index, None)


def run_until_decided(config_file, models: list, overrides: list, folds: int | None,
                      recipe: str | None, jobs: int, margin: float, max_units: int,
                      budget: float | None, versus: tuple | None = None,
                      harmless: bool = False) -> Path:
    """Train units until the study is decided, out of units or out of budget; write the
    report and print the decisions. Returns the output folder."""
    if max_units < 1:
        raise UserError(f"--max-units must be at least 1, got {max_units}")
    output = Path(load_config(config_file, models[0], overrides, recipe)["output"]["dir"])
    plan = Plan(max_units)
    ledger = Ledger(output)
    note = plan_change_note(ledger.plan()[0], max_units)
    if note:
        print(note, flush=True)
    ledger.start({"margin_pp": margin, "min_units": plan.min_units, "max_units": max_units,
                  "confidence": plan.confidence, "folds": folds, "models": list(models),
                  "budget_seconds": budget, "versus": _versus_record(versus, overrides, recipe),
                  "harmless": harmless})
    waits = (versus is not None, harmless)
    reason = None
    rule = {"margin_pp": margin, "min_units": plan.min_units, "max_units": max_units}
    for index in range(max_units):
        decisions = current_decisions(output, margin, plan)
        reason = answered(decisions, margin, *waits)
        if reason:
            break
        _, runs = plan_study(config_file, models, [unit_of(index, folds)], overrides, folds,
                             recipe, jobs, versus)
        todo = [run for run in runs if run[3].get("status") != "finished"]
        if not todo:
            print(f"unit {index + 1}: finished earlier, skipped", flush=True)
            continue
        if budget is not None:
            spent, estimate = _cost(ledger, output, jobs)
            if estimate is not None and spent + estimate > budget:
                reason = (f"budget: {spent / 3600:.2f} h spent, the next unit needs about "
                          f"{estimate / 3600:.2f} h of the {budget / 3600:.2f} h budget")
                break
        for d in decisions:
            if d["interval_pp"]:
                print(decision_line(d, rule), flush=True)
        print(f"== unit {index + 1} of at most {max_units} (seed {unit_of(index, folds)[0]}"
              f"{'' if folds is None else f', fold {unit_of(index, folds)[1]}'})", flush=True)
        started, trained = time.perf_counter(), 0
        try:
            trained = train_planned(runs, output, jobs)
        finally:  # an interrupted unit's time counts too
            ledger.add_unit(index, time.perf_counter() - started, trained, len(todo))
    if reason is None:
        reason = (answered(current_decisions(output, margin, plan), margin, *waits)
                  or f"max units ({max_units})")
    summary = write_report(output, margin=margin)
    print("\n".join(["", *decisions_table(summary), ""]))
    spent = ledger.read().get("spent_seconds", 0.0)
    print(f"stopped: {reason}; {spent / 3600:.2f} h of machine time spent on this study. "
          f"Wrote {output / 'report.md'}, report.json, study_curves.png", flush=True)
    return output


def current_decisions(output: Path, margin: float, plan: Plan) -> list:
    """The decisions on the runs below ``output`` that trained all their epochs ([] if none)."""
    runs = read_runs(output) if output.is_dir() else []
    runs = [r for r in mark_budgets(runs) if len(r["rows"]) >= r["epochs"]] if runs else []
    return summarize(runs, {}, margin, plan)["decisions"] if runs else []


def answered(decisions: list, margin: float, versus: bool = False,
             harmless: bool = False) -> str | None:
    """Why the study can stop (None: it cannot yet). It waits for the attention modules
    against their hosts, with ``versus`` for the setting rows too (else, with neither, for
    every row); ``harmless`` also takes a setting row whose interval rules out a loss of
    ``margin``."""
    kinds = ("attention", "setting") if versus else ("attention",)
    waited = [d for d in decisions if d["kind"] in kinds] or decisions

    def no_loss(d: dict) -> bool:
        return harmless and d["kind"] == "setting" and loss_ruled_out(d, margin)

    if not waited or not all(d["decided"] or no_loss(d) for d in waited):
        return None
    if all(d["decided"] for d in waited):
        return "decided"
    return f"decided, or a loss of {points(margin)} ruled out"


def _versus_record(versus: tuple | None, overrides: list, recipe: str | None) -> dict | None:
    """What study.json records of ``--versus``: the changed runs' recipe and overrides that
    differ from the rest's."""
    if versus is None:
        return None
    changed = [f"{k}={v}" for k, v in versus[0] if (k, v) not in overrides]
    return {"overrides": changed, "recipe": versus[1] if versus[1] != recipe else None}


def _cost(ledger: Ledger, output: Path, jobs: int) -> tuple:
    """(machine seconds spent, seconds the next unit should take or None)."""
    data = ledger.read()
    return data.get("spent_seconds", 0.0), unit_estimate(data, _from_epoch_times(output, jobs))


def _from_epoch_times(output: Path, jobs: int) -> float | None:
    """A unit's seconds from the finished runs' epoch times: each model's median run time,
    summed, over the runs trained side by side."""
    runs = read_runs(output) if output.is_dir() else []
    runs = [r for r in runs if len(r["rows"]) >= r["epochs"]]
    by_model: dict = {}
    for r in runs:
        by_model.setdefault(r["model"], []).append(sum(row["epoch_seconds"] for row in r["rows"]))
    if not by_model:
        return None
    return float(sum(np.median(t) for t in by_model.values()) / min(jobs, len(by_model)))
