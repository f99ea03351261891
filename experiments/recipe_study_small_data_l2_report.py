"""report.md / report.json / study_curves.png of small_data (lr 0.05 + warm-up 3 + L2 1e-3) on
the eval split, four models, into experiments/results/recipe_study_small_data_l2/.

    python experiments/recipe_study_small_data_l2_report.py <dir>/recipe_study_r13 <dir>/recipe_study2

small_data took L2 1e-3 after tuning round 13. Its towernet_simam and towernet runs had been
trained before, as round 13's candidate, under the recipe name ``r13_wd10``: the same values
(resolved configs equal apart from ``train.recipe``), on the same code. Rather than train them
again, this script reads them with their row label changed from ``+r13_wd10`` to
``+small_data`` -- nothing on disk is changed -- and leaves out
``towernet_simam+small_data-s0``, which was trained again under the name small_data only to
check that: its metrics.csv, predictions.csv and last.pdparams are byte-identical to
r13_wd10's seed 0 (determinism.txt in the results folder). ``eval.py --compare`` would show
the same runs as two recipes.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from app.study.report import write_runs_report  # noqa: E402
from app.study.runs import read_runs  # noqa: E402

OUT = ROOT / "experiments" / "results" / "recipe_study_small_data_l2"


def main(r13_root, study_root) -> None:
    runs = [{**run, "model": run["model"].replace("+r13_wd10", "+small_data")}
            for run in read_runs(r13_root)]
    runs += [r for r in read_runs(study_root) if r["dir"].name != "towernet_simam+small_data-s0"]
    OUT.mkdir(parents=True, exist_ok=True)
    write_runs_report(runs, [Path(r13_root), Path(study_root)], OUT)


if __name__ == "__main__":
    main(*sys.argv[1:3])
