"""The study report: report.md, report.json and study_curves.png for every run below folders."""
from __future__ import annotations

from pathlib import Path

from app.inspect import figures
from app.study.decide import DEFAULT_MARGIN, MIN_UNITS, Plan, loss_ruled_out, ordinal, plan_change_note, points
from app.study.ledger import Ledger
from app.study.runs import as_roots, mark_budgets, read_runs, report_dir_name
from app.study.summary import model_costs, summarize
from app.util.atomic import atomic_write_json, atomic_write_text
from app.util.errors import UserError


def _ratio(value) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _p_text(po: dict, model: str, baseline: str) -> str:
    if po.get("units", 0) < MIN_UNITS:
        return (f"P({model} > {baseline}) not given: {po.get('units', 0)} units, at least "
                f"{MIN_UNITS} needed")
    return (f"P({model} > {baseline}) = {po['p']:.2f} (95% Wilson interval "
            f"{po['ci95'][0]:.2f}-{po['ci95'][1]:.2f}, {po['units']} units)")


def decisions_table(summary: dict) -> list:
    """The decisions as markdown lines: the table every report and study opens with."""
    rule = summary["decision_rule"]
    lines = [f"| model | against | decision (D = {points(rule['margin_pp'])}) "
             "| gap, points (interval) | P(model > against) | units | train img/s | params | GMACs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for d in summary["decisions"]:
        po = d["p_outperform"]
        enough = po["units"] >= rule["min_units"]
        p = (f"{po['p']:.2f} ({po['ci'][0]:.2f}-{po['ci'][1]:.2f})" if enough
             else f"— ({po['units']} unit{'' if po['units'] == 1 else 's'})")
        marker = "" if d["kind"] == "attention" else " †" if d["kind"] == "setting" else " ‡"
        c = d["cost"]
        lines.append(f"| {d['model']} | {d['against']}{marker} | {_verdict(d, rule, bold=True)} "
                     f"| {_gap(d)} | {p} | "
                     f"{d['units']} | {_ratio(c['train_images_per_s'])} | {_ratio(c['params'])} "
                     f"| {_ratio(c['gmacs'])} |")
    return lines


def _projection(d: dict, rule: dict) -> str:
    """What an undecided row adds: the units that would decide it (and whether that passes
    the plan's last look), and a loss of D ruled out, or the units that would rule it out."""
    if d["mean_pp"] is None or not d["interval_pp"]:
        return f": needs {rule['min_units']} units"
    last = rule.get("max_units")

    def units(more: int) -> str:
        past = last is not None and d["units"] + more > last
        return f"~{more} more units" + (f" (past the plan's {last})" if past else "")

    margin = points(rule["margin_pp"])
    text = f": {units(d['more_units'])}" if d["more_units"] is not None else ""
    if loss_ruled_out(d, rule["margin_pp"]):
        return text + f"; a loss of {margin} or more ruled out"
    if d.get("more_units_no_loss") is not None:
        return text + f"; {units(d['more_units_no_loss'])} would rule out a loss of {margin}"
    return text


def _gap(d: dict) -> str:
    """The gap and its interval in points: ``+0.5 (-3.1 to +4.1)``."""
    gap = "—" if d["mean_pp"] is None else f"{d['mean_pp']:+.1f}"
    if d["interval_pp"]:
        gap += f" ({d['interval_pp'][0]:+.1f} to {d['interval_pp'][1]:+.1f})"
    return gap


def _verdict(d: dict, rule: dict, bold: bool = False) -> str:
    """The decision in words, an undecided one with its projection."""
    if d["decided"]:
        return f"**{d['verdict']}**" if bold else d["verdict"]
    return "undecided" + _projection(d, rule)


def decision_line(d: dict, rule: dict) -> str:
    """One decision as a line of a running study's output."""
    return f"after {d['units']} units: {d['model']} vs {d['against']}: {_gap(d)}, {_verdict(d, rule)}"


def decisions_section(summary: dict) -> list:
    rule = summary["decision_rule"]
    return ["## Decisions", "", *decisions_table(summary), "",
            f"Each decision reads one interval for the gap (model minus what it is compared "
            f"with, final eval top-1, paired by unit) with the margin D = {rule['margin_pp']:g} "
            f"points, the smallest gain that would matter: *hurts* (the interval lies below 0), "
            f"*helps by D or more* (above D), *helps, by less than D* (between 0 and D), *helps* "
            f"(above 0, reaching past D), *cannot help by D* (below D, reaching 0 or below; "
            f"*equivalent within ±D* when also above -D), else *undecided*, with about how many "
            f"more units would decide at the present mean and spread (and *a loss of D or more "
            f"ruled out* when the interval lies above -D, for a change you want to be harmless "
            f"rather than helpful; it is wrong at most 2.5% of the time, as *cannot help by D* "
            f"is; until then, about how many more units would rule it out). At least "
            f"{rule['min_units']} units; the interval is mean ± c·sd/√n over the units, with "
            f"{rule['looks']}. P(model > against): the share of units the model won (ties "
            f"half), Wilson interval; not given below {rule['min_units']} units. Costs are "
            f"ratios to what it is compared with. Rows without a mark compare an attention "
            f"module with its host (what `--until-decided` waits for); † one setting (recipe, "
            f"precision, pretrained source, budget or another key, `optimizer.lr=0.05`; waited "
            f"for too when it is the study's `--versus` change); ‡ another model against the "
            f"baseline.", ""]


def _units_text(m: dict) -> str:
    """A table cell for a model's runs: ``0,1,2`` (seeds) or ``s0 f0,1,2,3,4`` (seed, folds)."""
    if not m.get("folds"):
        return ",".join(map(str, m["seeds"]))
    by_seed: dict = {}
    for seed, fold in zip(m["seeds"], m["folds"]):
        by_seed.setdefault(seed, []).append(fold)
    return "; ".join(f"s{seed} f{','.join(map(str, sorted(folds)))}"
                     for seed, folds in sorted(by_seed.items()))


def _single_look_note(summary: dict) -> list:
    """Under the sections with plain intervals, when the study looked along the way."""
    rule = summary.get("decision_rule") or {}
    if rule.get("max_units") is None:
        return []
    return ["The intervals in this section are single 95% intervals at all units. This study's "
            f"plan looks at its gaps after every unit from the {ordinal(rule['min_units'])} to "
            f"the {ordinal(rule['max_units'])}, so only the Decisions table's intervals, widened "
            "for those looks, decide; these are narrower and read as descriptions.", ""]


def to_markdown(summary: dict, runs: list) -> str:
    kfold = summary.get("kfold", False)
    over, paired, each = (("seed x fold runs", "seed and fold", "per-run (seed, fold)") if kfold
                          else ("seeds", "seed", "per-seed"))
    lines = ["# Study report", "",
             *(decisions_section(summary) + ["## Models", ""] if "decisions" in summary else []),
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
    lines += ["", f"## Against `{summary['baseline']}` (paired by {paired}, final top-1)", "",
              *_single_look_note(summary)]
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
                             f"{v['verdict_bootstrap']} {_p_text(po, m['model'], summary['baseline'])}; "
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
                  "run's final top-1 (— never).", "", *_single_look_note(summary),
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
              "(ties half) with a Wilson interval (from 5 units), McNemar's exact test on the "
              "pooled "
              "discordant images, and the minimum detectable difference at 80% power "
              "(2.8 bootstrap standard errors)."]
    if kfold:
        lines += ["", "The t interval over seed x fold runs treats the folds as independent "
                  "samples; their training sets overlap, so it is optimistic (Nadeau & Bengio, "
                  "2003). The bootstrap resamples folds and the images within them."]
    lines += ["", "![eval accuracy per epoch](study_curves.png)", ""]
    return "\n".join(lines)


def write_report(roots, out=None, margin: float | None = None, max_units: int | None = None) -> dict:
    """Write report.md, report.json and study_curves.png for every run below ``roots`` (one
    folder or several, e.g. a from-scratch study and a fine-tuning study) into ``out``
    (default: the first folder). Decisions use ``margin`` (points; default: the study's
    plan's, else DEFAULT_MARGIN) and a sequential plan: a look after every unit up to
    ``max_units`` when given, else the plan of a single study run ``--until-decided``
    (study.json), else one look at all units."""
    roots = as_roots(roots)
    everything = [r for folder in roots for r in read_runs(folder)]
    if not everything:
        raise UserError(f"no runs with metrics.csv below {', '.join(map(str, roots))}")
    plan, planned_margin = Ledger(roots[0]).plan() if len(roots) == 1 else (None, None)
    margin = margin if margin is not None else planned_margin
    if max_units is not None:
        note = plan_change_note(plan, max_units)
        if note:
            print(note, flush=True)
        plan = Plan(max_units)
    return write_runs_report(everything, roots, Path(out) if out is not None else roots[0],
                             DEFAULT_MARGIN if margin is None else margin, plan or Plan())


def write_runs_report(everything: list, roots: list, root: Path, margin: float = DEFAULT_MARGIN,
                      plan: Plan = Plan()) -> dict:
    """:func:`write_report` for runs already read (:func:`read_runs`) from ``roots``."""
    everything = mark_budgets(everything)
    # Only runs that trained all their epochs enter the statistics: a run still going (or
    # stopped) would pull its model's mean towards an early epoch.
    runs = [r for r in everything if len(r["rows"]) >= r["epochs"]]
    pending = [r for r in everything if len(r["rows"]) < r["epochs"]]
    if not runs:
        raise UserError(f"no run below {', '.join(map(str, roots))} has finished its epochs yet "
                        f"({len(pending)} in progress or stopped)")
    summary = summarize(runs, model_costs(runs), margin, plan)
    summary["runs"] = [{"dir": report_dir_name(r["dir"], roots), "model": r["model"],
                        "seed": r["seed"], "fold": r["fold"], "finished": r["finished"],
                        "counted": len(r["rows"]) >= r["epochs"],
                        "eval_acc": [row["eval_acc"] for row in r["rows"]]} for r in everything]
    figures.plot_study_curves(runs, root / "study_curves.png")
    atomic_write_json(root / "report.json", summary)
    text = to_markdown(summary, runs)
    if pending:
        text += ("\nNot counted (epochs not all trained yet, or stopped): " + ", ".join(
            f"`{report_dir_name(r['dir'], roots)}` ({len(r['rows'])}/{r['epochs']})"
            for r in pending) + "\n")
    atomic_write_text(root / "report.md", text)
    return summary
