"""report.md / report.json / study_curves.png of session 31's small_data rows (issue 15).

    python reports/recipe_study/session31/make_report.py <dir>/recipe_study_r13 <dir>/recipe_study2

small_data took L2 1e-3 in session 31. Its towernet_simam and towernet runs had been trained
before, as round 13's candidate, under the recipe name ``r13_wd10``: the same values (resolved
configs equal apart from ``train.recipe``), on the same code. Rather than train them again,
this script reads them with their row label changed from ``+r13_wd10`` to ``+small_data`` --
nothing on disk is changed -- and leaves out ``towernet_simam+small_data-s0``, which was
trained again under the name small_data only to check that: its metrics.csv,
predictions.csv and last.pdparams are byte-identical to r13_wd10's seed 0 (see README.md).
``eval.py --compare`` would show the same runs as two recipes.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from app import report  # noqa: E402
from app.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from app.study import model_costs, read_runs, summarize, to_markdown  # noqa: E402

OUT = Path(__file__).resolve().parent


def main(r13_root, study_root) -> None:
    runs = []
    for run in read_runs(r13_root):
        runs.append({**run, "model": run["model"].replace("+r13_wd10", "+small_data")})
    runs += [r for r in read_runs(study_root) if r["dir"].name != "towernet_simam+small_data-s0"]
    assert all(len(r["rows"]) >= r["epochs"] for r in runs), "a run has not finished"
    summary = summarize(runs, model_costs(runs))
    summary["runs"] = [{"dir": r["dir"].name, "model": r["model"], "seed": r["seed"],
                        "eval_acc": [row["eval_acc"] for row in r["rows"]]} for r in runs]
    report.plot_study_curves(runs, OUT / "study_curves.png")
    atomic_write_json(OUT / "report.json", summary)
    atomic_write_text(OUT / "report.md", to_markdown(summary, runs))
    print(to_markdown(summary, runs))


if __name__ == "__main__":
    main(*sys.argv[1:3])
