"""Shared fixtures: a tiny generated split that training tests can reuse."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("GLOG_minloglevel", "2")


@pytest.fixture(scope="session")
def tiny_split(tmp_path_factory) -> Path:
    """4 generated classes x 12 images, split 3:1 (36 train / 12 eval), read-only by tests."""
    from data_tools.demo import make_demo_images
    from data_tools.split import split_dataset

    base = tmp_path_factory.mktemp("tiny")
    make_demo_images(base / "src", num_classes=4, per_class=12, seed=0, size_range=(64, 96))
    split_dataset(base / "src", base / "split", eval_ratio=0.25, seed=0, progress=False)
    return base / "split"


def run_cli(*args, timeout=600, check=False, env=None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python <args>`` from the repository root and capture its output."""
    env = env or {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def optimizer_for(cfg: dict, network, steps_per_epoch: int):
    """The optimizer ``train.py`` builds for ``cfg`` (its optimizer section over its schedule)."""
    from app.build.optimizer import build_optimizer

    t = cfg["train"]
    return build_optimizer(cfg["optimizer"], network, steps_per_epoch, t["epochs"], t["warmup_epochs"])


FAST_TRAIN = ["--image-size", "64", "--batch-size", "12", "-o", "data.cache=false"]


@pytest.fixture(scope="session")
def tiny_run(tiny_split, tmp_path_factory):
    """(runs folder, train.py stdout): towernet_simam trained 2 epochs on ``tiny_split``."""
    runs = tmp_path_factory.mktemp("runs")
    proc = run_cli("train.py", "--model", "towernet_simam", "--data", tiny_split, "--epochs",
                   "2", "--output", runs, *FAST_TRAIN, check=True)
    return runs, proc.stdout


def train_cut_in_epoch_2(cfg, run_dir: Path) -> None:
    """Train ``cfg`` in this process and stop it like Ctrl-C on epoch 2's first step (its
    epoch 1 checkpoint written), expecting the trainer's RunStopped; ``run_dir`` is the
    folder the run will get."""
    import json

    from app.build.loss import ClassificationLoss
    from app.train import trainer

    forward, state = ClassificationLoss.forward, Path(run_dir) / "state.json"

    def interrupt_in_epoch_2(self, *args, **kwargs):
        if state.is_file() and json.loads(state.read_text()).get("epoch", 0) >= 1:
            raise KeyboardInterrupt
        return forward(self, *args, **kwargs)

    ClassificationLoss.forward = interrupt_in_epoch_2
    try:
        with pytest.raises(trainer.RunStopped):
            trainer.train(cfg)
    finally:
        ClassificationLoss.forward = forward
