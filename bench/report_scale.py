"""How a study report's time grows with its runs and their eval images.

    python bench/report_scale.py [--runs 12,24,48,96] [--images 364,1817] [--models 3]

Generates study folders of finished runs (config.yaml, metrics.csv, best.json and a
predictions.csv of ``images`` eval images, ``models`` models x seeds) and times
``write_report`` on each: seconds, and seconds per thousand run x image pairs, which stays
flat if the report grows no worse than linearly. A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import app  # noqa: F401  (process set-up before Paddle)

# isort: split
from app.config.load import load_config
from app.run.folder import RunFolder
from app.study.report import write_report
from app.util.atomic import atomic_write_json

MODELS = ["towernet", "towernet_simam", "towernet_se", "towernet_eca", "towernet_cbam"]


def fake_study(root: Path, runs: int, images: int, models: int, rng) -> None:
    """``runs`` finished runs of ``models`` models (seeds 0, 1, ...) with predictions."""
    for i in range(runs):
        model, seed = MODELS[i % models], i // models
        run = RunFolder(root / f"{model}-s{seed}")
        run.path.mkdir(parents=True)
        cfg = load_config(model=model, overrides=[("train.epochs", 3), ("train.seed", seed),
                                                  ("data.image_size", 64)])
        run.write_config(cfg)
        acc = rng.uniform(0.8, 0.9, 3)
        run.write_metrics([{"epoch": e + 1, "train_loss": 1.0, "train_acc": 0.5, "eval_loss": 1.0,
                            "eval_acc": a, "eval_top5": 1.0, "lr": 0.01, "epoch_seconds": 1.0,
                            "train_images_per_s": 100.0} for e, a in enumerate(acc)])
        run.write_state({"epoch": 3, "status": "finished"})
        atomic_write_json(run.best_file, {"model": model, "num_classes": 16, "epoch": 3})
        labels = rng.integers(0, 16, images)
        preds = np.where(rng.random(images) < acc[-1], labels, rng.integers(0, 16, images))
        run.write_predictions((f"c{label}/img{k}.jpg", label, pred, 0.9, 0.9)
                              for k, (label, pred) in enumerate(zip(labels, preds)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="12,24,48,96")
    p.add_argument("--images", default="364,1817")
    p.add_argument("--models", type=int, default=3)
    args = p.parse_args(argv)
    print(f"{'runs':>5}{'images':>8}{'seconds':>9}{'ms per 1000 run-images':>24}", flush=True)
    for images in map(int, args.images.split(",")):
        for runs in map(int, args.runs.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                fake_study(Path(tmp), runs, images, args.models, np.random.default_rng(0))
                write_report(tmp)  # warm: model costs, imports
                start = time.perf_counter()
                write_report(tmp)
                seconds = time.perf_counter() - start
            print(f"{runs:>5}{images:>8}{seconds:>9.2f}{1e6 * seconds / (runs * images):>24.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
