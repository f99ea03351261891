"""How often the study's decisions err, and how many units they take: generated studies.

    python experiments/decision_simulation.py [--studies 2000] [--margin 2] [--max-units 20]
        [--fit experiments/results/attention_towernet_kfold5/report.json]
        [--out experiments/results/decision_simulation]

Units are generated as app/study/simulation.py describes, with the image noise and unit noise
fitted to a real study (default: the 5-fold TowerNet study). For true gaps of 0, 1, 2 and 3
points it runs the sequential rule of ``train.py --until-decided`` (a look after every unit
from the 5th to ``--max-units``) and one-look studies of fixed sizes on the same generated
units, and reports the decisions, the errors the rule bounds, and the units used; also the
error of checking a plain 95% t interval at every look, which the calibration exists to avoid.
Writes report.md and report.json into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.study.decide import Plan  # noqa: E402
from app.study.simulation import fit, outcome, run_fixed, run_sequential, unit_gaps  # noqa: E402
from app.util.atomic import atomic_write_json, atomic_write_text  # noqa: E402

GAPS = (0.0, 1.0, 2.0, 3.0)
FIXED = (5, 10, 20)
FAMILIES = ("helps", "cannot help", "hurts", "undecided")


def below_margin(verdict: str) -> bool:
    """A verdict whose interval lies below the margin: it says the gain is less than D."""
    return outcome(verdict) in ("cannot help", "hurts") or verdict.startswith("helps, by less")


def naive_error(gaps: np.ndarray, plan: Plan) -> float:
    """False "helps"/"hurts" when a plain 95% t interval is checked at every look."""
    from app.study.decide import critical_value
    from app.study.simulation import intervals

    looks, mean, lo, hi = intervals(gaps, plan)
    c_plain = np.array([critical_value(n, n) for n in looks])
    sd_scaled = (hi - lo) / 2 / np.array([plan.critical_value(n) for n in looks])
    plain_lo, plain_hi = mean - c_plain * sd_scaled, mean + c_plain * sd_scaled
    return float(((plain_lo > 0) | (plain_hi < 0)).any(axis=1).mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=2000)
    p.add_argument("--margin", type=float, default=2.0)
    p.add_argument("--max-units", type=int, default=20)
    p.add_argument("--fit", default=str(ROOT / "experiments/results/attention_towernet_kfold5/report.json"))
    p.add_argument("--out", default=str(ROOT / "experiments/results/decision_simulation"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model = fit(json.loads(Path(args.fit).read_text()))
    plan, d = Plan(args.max_units), args.margin
    rng = np.random.default_rng(args.seed)
    results = {"unit_model": model.__dict__, "gap_sd_pp": model.gap_sd(), "margin_pp": d,
               "plan": plan.describe(), "studies": args.studies, "fit": args.fit, "gaps": {}}
    for gap in GAPS:
        gaps = unit_gaps(model, gap, args.studies, args.max_units, rng)
        verdicts, used = run_sequential(gaps, d, plan)
        row = {"sequential": {**{f: float(np.mean([outcome(v) == f for v in verdicts]))
                                 for f in FAMILIES},
                              "below_margin": float(np.mean([below_margin(v) for v in verdicts])),
                              "units_mean": float(used.mean()),
                              "units_p90": float(np.percentile(used, 90)),
                              "verdicts": dict(Counter(verdicts))},
               "fixed": {}}
        for n in FIXED:
            fixed = run_fixed(gaps, d, n)
            row["fixed"][n] = {**{f: float(np.mean([outcome(v) == f for v in fixed]))
                                  for f in FAMILIES},
                               "below_margin": float(np.mean([below_margin(v) for v in fixed]))}
        if gap == 0:
            row["naive_every_look_false_helps_or_hurts"] = naive_error(gaps, plan)
        results["gaps"][f"{gap:g}"] = row
        print(f"gap {gap:g}: {row['sequential']}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", results)
    atomic_write_text(out / "report.md", markdown(results, args))
    print(f"wrote {out / 'report.md'}, report.json")
    return 0


def markdown(r: dict, args) -> str:
    d = f"{r['margin_pp']:g}"
    m = r["unit_model"]
    zero, at_d = r["gaps"]["0"], r["gaps"][d] if d in r["gaps"] else None
    fit = Path(r["fit"]).relative_to(ROOT) if Path(r["fit"]).is_relative_to(ROOT) else r["fit"]
    lines = ["# The decision rule on generated studies", "",
             f"{r['studies']} generated studies per true gap; margin D = {d} points; "
             f"{r['plan']}.", "",
             f"Units fitted to `{fit}`: "
             f"{m['images']} eval images per unit, baseline top-1 {m['accuracy']:.3f}, "
             f"{100 * m['discordant']:.1f}% of images got right by exactly one model, unit "
             f"deviation {m['unit_sd']:.2f} points beyond image noise; one unit's gap varies "
             f"with a standard deviation of {r['gap_sd_pp']:.2f} points.", "",
             "## Errors the rule bounds", "",
             f"- true gap 0: false \"helps\" or \"hurts\" in "
             f"{100 * (zero['sequential']['helps'] + zero['sequential']['hurts']):.1f}% of the "
             f"sequential studies (bound: 5%); checking a plain 95% t interval at every look "
             f"instead: {100 * zero['naive_every_look_false_helps_or_hurts']:.1f}%."]
    if at_d:
        lines.append(f"- true gap {d}: \"cannot help by {d}\" in "
                     f"{100 * at_d['sequential']['cannot help']:.1f}% (bound: 2.5%); any verdict "
                     f"that puts the gain below {d} (cannot help, helps by less than {d}, hurts) "
                     f"in {100 * at_d['sequential']['below_margin']:.1f}%.")
    lines += ["", "## Decisions and units used", "",
              "| true gap | design | helps | cannot help | hurts | undecided | units: mean | units: 90th pct |",
              "|---|---|---|---|---|---|---|---|"]
    for gap, row in r["gaps"].items():
        s = row["sequential"]
        lines.append(f"| {gap} | sequential (5 to {args.max_units}) | {100 * s['helps']:.1f}% | "
                     f"{100 * s['cannot help']:.1f}% | {100 * s['hurts']:.1f}% | "
                     f"{100 * s['undecided']:.1f}% | {s['units_mean']:.1f} | {s['units_p90']:.0f} |")
        for n, f in row["fixed"].items():
            lines.append(f"| {gap} | fixed, {n} units | {100 * f['helps']:.1f}% | "
                         f"{100 * f['cannot help']:.1f}% | {100 * f['hurts']:.1f}% | "
                         f"{100 * f['undecided']:.1f}% | {n} | {n} |")
    lines += ["", "A fixed design of n units has the same error bounds by construction (one look, "
              "the 95% t interval): it decides once, after all n units. The sequential design "
              "stops as soon as its interval decides. Reproduce: `python "
              "experiments/decision_simulation.py`.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
