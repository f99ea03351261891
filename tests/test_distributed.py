"""Data parallel on CPU: train.py under ``paddle.distributed.launch`` with 2 ranks (gloo).

Two topologies, each launched once for every test here (tests/distributed_worker.py:
train.py plus a report from each rank): one launcher with 2 processes, and two launchers
acting as two machines (``--nnodes 2 --master 127.0.0.1:<free port>``, 1 process each).
The eval split has 11 images, so the DistributedBatchSampler pads it to 12 and
the eval metrics are right only if that padding is dropped again.
"""
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import paddle
import pytest

from app.run.folder import RunFolder
from conftest import FAST_TRAIN, ROOT, run_cli

WORLD = 2
TRAIN_IMAGES, EPOCHS = 36, 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(commands: list, logs, timeout: int = 600) -> None:
    """Run the launcher commands side by side; fail with the worker logs if any fails.

    On a timeout every launcher is stopped by its PID (with its process group, the workers).
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(list(map(str, cmd)), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
             for cmd in commands]
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        for p in procs:
            p.wait()
        pytest.fail(f"launchers still running after {timeout} s: stopped")
    if any(p.returncode for p in procs):
        worker_logs = "".join(f"--- {p}\n{p.read_text()[-3000:]}"
                              for p in sorted(logs.rglob("workerlog.*")))
        pytest.fail(f"launch exited {[p.returncode for p in procs]}\n"
                    f"{''.join(o[-2000:] for o in outputs)}\n{worker_logs}")


@pytest.fixture(scope="module", params=["1 node x 2 processes", "2 nodes x 1 process"])
def launched(request, tiny_split, tmp_path_factory):
    """(data, runs folder, per-rank dump folder) of a 2-rank, 2-epoch towernet run: one
    launcher with 2 processes, or two launchers acting as two machines (--nnodes 2, master
    on 127.0.0.1), each with 1 process and its own log folder."""
    base = tmp_path_factory.mktemp("dp")
    data, runs, dump, logs = base / "data", base / "runs", base / "dump", base / "logs"
    shutil.copytree(tiny_split, data)
    sorted(p for p in (data / "eval").rglob("*") if p.is_file())[0].unlink()
    dump.mkdir()
    worker = ["tests/distributed_worker.py", dump, "--model", "towernet", "--data", data,
              "--epochs", str(EPOCHS), "--output", runs, *FAST_TRAIN]
    launcher = [sys.executable, "-m", "paddle.distributed.launch"]
    if request.param.startswith("1 node"):
        commands = [[*launcher, "--nproc_per_node", str(WORLD), "--log_dir", logs, *worker]]
    else:
        master = f"127.0.0.1:{free_port()}"
        commands = [[*launcher, "--master", master, "--nnodes", "2", "--rank", str(node),
                     "--host", "127.0.0.1", "--nproc_per_node", "1", "--job_id", "twonodes",
                     "--log_dir", logs / f"node{node}", *worker] for node in range(2)]
    launch(commands, logs)
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


def test_train_loss_in_metrics_is_the_mean_over_all_ranks(launched):
    _, runs, dump = launched
    rows = RunFolder(runs / "towernet").read_metrics()
    per_rank = [rank_report(dump, r)["losses"] for r in range(WORLD)]
    steps = len(per_rank[0]) // EPOCHS
    for epoch, row in enumerate(rows):
        batches = [b for losses in per_rank for b in losses[epoch * steps:(epoch + 1) * steps]]
        mean = sum(loss * n for loss, n in batches) / sum(n for _, n in batches)
        assert row["train_loss"] == pytest.approx(mean, rel=1e-4)


def test_a_nan_on_one_rank_stops_every_rank_and_marks_the_run_diverged(tiny_split, tmp_path):
    runs, dump, logs = tmp_path / "runs", tmp_path / "dump", tmp_path / "logs"
    dump.mkdir()
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(WORLD),
           "--log_dir", logs, "tests/distributed_worker.py", dump, "--model", "towernet",
           "--data", tiny_split, "--epochs", "2", "--output", runs, *FAST_TRAIN]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NAN_ON_RANK": "1"}
    proc = subprocess.run(list(map(str, cmd)), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    state = json.loads((runs / "towernet" / "state.json").read_text())
    assert state["status"] == "diverged", state
    assert [rank_report(dump, r)["exit_code"] for r in range(WORLD)] == [3, 3]


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
    from app.build.loader import build_loader
    from app.inspect.evaluate import eval_dataset, find_checkpoint, load_network
    from app.inspect.predict import predict_logits, softmax

    data, runs, _ = launched
    run = runs / "towernet"
    weights, meta = find_checkpoint(checkpoint=run / "last.pdparams")
    logits, labels = predict_logits(load_network(weights, meta),
                                    build_loader(eval_dataset(meta), 12, shuffle=False))
    probs = softmax(logits)
    assert len(labels) == 11
    last = RunFolder(run).read_metrics()[-1]
    assert last["eval_acc"] == pytest.approx(np.mean(probs.argmax(1) == labels), abs=1e-6)
    loss = -np.log(probs[np.arange(len(labels)), labels]).mean()
    assert last["eval_loss"] == pytest.approx(loss, rel=1e-5)

    run_cli("eval.py", "--run", run, check=True)
    result = json.loads((run / "eval.json").read_text())
    assert result["num_images"] == 11
    assert result["top1"] == pytest.approx(json.loads((run / "best.json").read_text())["eval_acc"],
                                           abs=1e-6)
