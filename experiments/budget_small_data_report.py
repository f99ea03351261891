"""report.md / report.json / study_curves.png of the budget runs, and budgets.md: each budget
against small_data at 128 px / 30 epochs, paired by seed. Writes experiments/results/budget_small_data/.

    python experiments/budget_small_data_report.py <dir>/budget_e60 <dir>/budget_px160 <dir>/budget_e90

The study report tags the budgets fewer of its runs share (``30ep 160px``, ``90ep`` once the
60-epoch folder holds the most runs), so each model at each budget is its own row. The 128 px
/ 30 epoch runs are those of experiments/results/recipe_study_small_data_l2/; their final eval
top-1 per seed is read from that report's committed report.json (the runs themselves need not be
on disk), so the comparison with them is by seed (t interval), without the per-image
statistics that need their predictions.
"""
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from app.study.report import write_runs_report  # noqa: E402
from app.study.runs import read_runs  # noqa: E402
from app.study.significance import paired_verdict, sample_std  # noqa: E402
from app.util.atomic import atomic_write_text  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
OUT = RESULTS / "budget_small_data"
BASE_REPORT = RESULTS / "recipe_study_small_data_l2" / "report.json"


def base_finals() -> dict:
    """{(model, seed): final eval top-1} of small_data's runs at 128 px / 30 epochs."""
    return {(r["model"].split(" ")[0], r["seed"]): r["eval_acc"][-1]
            for r in json.loads(BASE_REPORT.read_text())["runs"] if r["counted"]}


def main(*roots) -> None:
    roots = [Path(r) for r in roots]
    runs = [r for root in roots for r in read_runs(root)]
    OUT.mkdir(parents=True, exist_ok=True)
    write_runs_report(runs, roots, OUT)
    base = base_finals()
    lines = ["| model | budget | final top-1 (per seed) | mean ± std | 128 px / 30 ep, same seeds | "
             "gain per seed (points) | verdict |", "|---|---|---|---|---|---|---|"]
    table, groups = [], {}
    for r in runs:
        if len(r["rows"]) >= r["epochs"]:
            key = (r["model"].split(" ")[0], r["epochs"], r["image_size"])
            groups.setdefault(key, {})[r["seed"]] = r["rows"][-1]["eval_acc"]
    for (name, epochs, size), mine in sorted(groups.items()):
        budget = f"{epochs} ep, {size} px"
        seeds = sorted(s for s in mine if (name, s) in base)
        v = paired_verdict([mine[s] - base[name, s] for s in seeds],
                           f"{name} at {budget}", f"{name} at 30 ep, 128 px")
        vals = [mine[s] for s in seeds]
        table.append({"model": name, "epochs": epochs, "image_size": size, "seeds": seeds,
                      "final": vals, "base": [base[name, s] for s in seeds], **v})
        lines.append(f"| {name} | {budget} | {', '.join(f'{x:.4f}' for x in vals)} | "
                     f"{np.mean(vals):.4f} ± {sample_std(vals):.4f} | "
                     f"{', '.join(f'{base[name, s]:.4f}' for s in seeds)} | "
                     f"{', '.join(f'{d:+.1f}' for d in v['diffs_pp'])} | {v['verdict']} |")
    atomic_write_text(OUT / "budgets.json", json.dumps(table, indent=1) + "\n")
    atomic_write_text(OUT / "budgets.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:])
