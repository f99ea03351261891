"""report.md / report.json / study_curves.png of the fine-tuned small_data runs, into
experiments/results/finetune_other68_small_data/.

    python experiments/finetune_small_data_report.py <dir>/ft_small_data <dir>/recipe_study_r13

Reads the fine-tuned runs (``<model>[+small_data]@<model>-other68-sd-s<seed>``, rows
``<model> [+small_data] @other68``) and, for the rows from scratch, small_data's runs of the
same two models. Those were trained under the recipe name ``r13_wd10`` (small_data's values
since it took L2 1e-3; byte-identical weights when trained again under the name small_data:
experiments/results/recipe_study_small_data_l2/determinism.txt) and are read here with the
row label changed to ``+small_data``; nothing on disk is changed.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from app.study.report import write_runs_report  # noqa: E402
from app.study.runs import read_runs  # noqa: E402

OUT = ROOT / "experiments" / "results" / "finetune_other68_small_data"


def main(finetuned_root, scratch_root) -> None:
    # Each model was pretrained from its own run (towernet-other68-sd, towernet_simam-other68-sd)
    # on the same data with the same recipe: one tag, so that the report pairs SimAM with its
    # host among the fine-tuned runs too.
    runs = [{**run, "model": re.sub(r"@towernet(_simam)?-other68-sd", "@other68", run["model"])}
            for run in read_runs(finetuned_root)]
    runs += [{**run, "model": run["model"].replace("+r13_wd10", "+small_data")}
             for run in read_runs(scratch_root)]
    OUT.mkdir(parents=True, exist_ok=True)
    write_runs_report(runs, [Path(finetuned_root), Path(scratch_root)], OUT)


if __name__ == "__main__":
    main(*sys.argv[1:3])
