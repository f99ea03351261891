"""Data parallel on CPU: train.py under ``paddle.distributed.launch`` with 2 processes (gloo).

One launch (tests/distributed_worker.py: train.py plus a report from each rank) serves every
test here. The eval split has 11 images, so the DistributedBatchSampler pads it to 12 and
the eval metrics are right only if that padding is dropped again.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest

from app.callbacks import read_metrics
from conftest import FAST_TRAIN, ROOT, run_cli

WORLD = 2
TRAIN_IMAGES, EPOCHS = 36, 2


@pytest.fixture(scope="module")
def launched(tiny_split, tmp_path_factory):
    """(data, runs folder, per-rank dump folder) of a 2-process, 2-epoch towernet run."""
    base = tmp_path_factory.mktemp("dp")
    data, runs, dump, logs = base / "data", base / "runs", base / "dump", base / "logs"
    shutil.copytree(tiny_split, data)
    sorted(p for p in (data / "eval").rglob("*") if p.is_file())[0].unlink()
    dump.mkdir()
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(WORLD),
           "--log_dir", logs, "tests/distributed_worker.py", dump,
           "--model", "towernet", "--data", data, "--epochs", str(EPOCHS), "--output", runs,
           *FAST_TRAIN]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(list(map(str, cmd)), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        worker_logs = "".join(f"--- {p.name}\n{p.read_text()[-3000:]}"
                              for p in sorted(logs.glob("workerlog.*")))
        pytest.fail(f"launch exited {proc.returncode}\n{proc.stderr[-3000:]}\n{worker_logs}")
    return data, runs, dump


def rank_report(dump, rank: int) -> dict:
    return json.loads((dump / f"rank{rank}.json").read_text())


def test_ranks_end_with_identical_weights_and_statistics(launched):
    _, runs, dump = launched
    states = [paddle.load(str(dump / f"rank{r}.pdparams")) for r in range(WORLD)]
    saved = paddle.load(str(runs / "towernet" / "last.pdparams"))
    assert states[0].keys() == states[1].keys() == saved.keys()
    for key in saved:  # BatchNorm running statistics included
        assert np.array_equal(states[0][key].numpy(), states[1][key].numpy()), key
        assert np.array_equal(states[0][key].numpy(), saved[key].numpy()), key


def test_one_run_dir_that_every_rank_agrees_on(launched):
    _, runs, dump = launched
    assert [p.name for p in runs.iterdir()] == ["towernet"]
    for rank in range(WORLD):
        report = rank_report(dump, rank)
        assert report["exit_code"] == 0
        assert report["run_dirs"] == [str(runs / "towernet")]
    state = json.loads((runs / "towernet" / "state.json").read_text())
    assert state["status"] == "finished" and state["epoch"] == EPOCHS


def test_every_train_image_read_once_per_epoch(launched):
    _, _, dump = launched
    reads = [rank_report(dump, r)["train_reads"] for r in range(WORLD)]
    per_rank = TRAIN_IMAGES // WORLD
    assert [len(r) for r in reads] == [per_rank * EPOCHS] * WORLD
    for epoch in range(EPOCHS):
        seen = [i for r in reads for i in r[epoch * per_rank:(epoch + 1) * per_rank]]
        assert sorted(seen) == list(range(TRAIN_IMAGES))


def test_logged_eval_equals_single_process_eval(launched):
    """metrics.csv / best.json hold every eval image once: the same numbers a single
    process gets from the saved checkpoint."""
    from app.engine import build_loader, predict_logits, softmax
    from app.evaluation import eval_dataset, find_checkpoint, load_network

    data, runs, _ = launched
    run = runs / "towernet"
    weights, meta = find_checkpoint(checkpoint=run / "last.pdparams")
    logits, labels = predict_logits(load_network(weights, meta),
                                    build_loader(eval_dataset(meta), 12, shuffle=False))
    probs = softmax(logits)
    assert len(labels) == 11
    last = read_metrics(run / "metrics.csv")[-1]
    assert last["eval_acc"] == pytest.approx(np.mean(probs.argmax(1) == labels), abs=1e-6)
    loss = -np.log(probs[np.arange(len(labels)), labels]).mean()
    assert last["eval_loss"] == pytest.approx(loss, rel=1e-5)

    run_cli("eval.py", "--run", run, check=True)
    result = json.loads((run / "eval.json").read_text())
    assert result["num_images"] == 11
    assert result["top1"] == pytest.approx(json.loads((run / "best.json").read_text())["eval_acc"],
                                           abs=1e-6)
