"""Damaged run files and kills between checkpoint writes: a clear line or a clean fallback.

One 3-epoch run is trained once; every case works on its own copy.
"""
import json
import shutil
from pathlib import Path

import pytest

from app.run.folder import RunFolder
from conftest import run_cli, train_cut_in_epoch_2

TINY = ["--image-size", "32", "--batch-size", "12", "-o", "data.cache=false"]


@pytest.fixture(scope="module")
def finished_run(tiny_split, tmp_path_factory):
    out = tmp_path_factory.mktemp("rel")
    run_cli("train.py", "--model", "towernet", "--data", tiny_split, "--epochs", "3",
            "--output", out, *TINY, check=True)
    return out / "towernet"


def copy_unfinished(finished_run, tmp_path, epoch_of_state=None):
    """A copy of the run that looks interrupted after its last epoch's checkpoint, with the
    schedule one epoch longer (so --resume has an epoch left to train)."""
    run = tmp_path / "towernet"
    shutil.copytree(finished_run, run)
    cfg = (run / "config.yaml").read_text().replace("epochs: 3", "epochs: 4")
    (run / "config.yaml").write_text(cfg)
    state = json.loads((run / "state.json").read_text())
    state["status"] = "interrupted"
    (run / "state.json").write_text(json.dumps(state))
    return run


def damage(path, how):
    data = path.read_bytes()
    path.write_bytes(b"" if how == "empty" else data[: len(data) // 2])


def one_line_exit_2(proc, name):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and name in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("how", ["truncated", "empty"])
@pytest.mark.parametrize("name", ["last.pdparams", "last.pdopt"])
def test_a_damaged_last_checkpoint_falls_back_to_the_previous_epoch(finished_run, tmp_path, name, how):
    run = copy_unfinished(finished_run, tmp_path)
    damage(run / name, how)
    proc = run_cli("train.py", "--resume", run, check=True)
    assert "resuming from epoch 2" in proc.stdout
    rows = RunFolder(run).read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]  # epoch 3 retrained, each epoch once
    assert json.loads((run / "state.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("how", ["truncated", "empty"])
def test_both_checkpoints_damaged_is_one_line(finished_run, tmp_path, how):
    run = copy_unfinished(finished_run, tmp_path)
    for name in ("last.pdparams", "last-prev.pdparams"):
        damage(run / name, how)
    one_line_exit_2(run_cli("train.py", "--resume", run), "last.pdparams")


def test_killed_between_the_checkpoint_and_state_json_resumes_cleanly(finished_run, tmp_path):
    # As if killed after writing epoch 3's last.* but before its state.json: state.json
    # still describes epoch 2, whose pair now sits in last-prev.*.
    run = copy_unfinished(finished_run, tmp_path)
    state = json.loads((run / "state.json").read_text())
    state.update(epoch=2, checkpoint=state["previous"], previous=None)
    (run / "state.json").write_text(json.dumps(state))
    proc = run_cli("train.py", "--resume", run, check=True)
    assert [r["epoch"] for r in RunFolder(run).read_metrics()] == [1, 2, 3, 4]
    assert "damaged" not in proc.stdout  # the newest pair state.json vouches for was whole


@pytest.mark.parametrize("how", ["truncated", "empty"])
@pytest.mark.parametrize("name, commands", [
    ("state.json", [["train.py", "--resume", "{run}"], ["eval.py", "--compare", "{root}"]]),
    ("config.yaml", [["train.py", "--resume", "{run}"], ["eval.py", "--compare", "{root}"]]),
    ("metrics.csv", [["train.py", "--resume", "{run}"], ["eval.py", "--compare", "{root}"]]),
    ("best.pdparams", [["eval.py", "--run", "{run}"]]),
    ("best.json", [["eval.py", "--run", "{run}"], ["eval.py", "--compare", "{root}"]]),
])
def test_damaged_run_files_are_one_line_exit_2(finished_run, tmp_path, name, commands, how):
    run = copy_unfinished(finished_run, tmp_path)
    if name == "metrics.csv" and how == "truncated":
        text = (run / name).read_text()
        (run / name).write_text(text[: text.rindex(",") - 3])  # cut inside the last row
    else:
        damage(run / name, how)
    for command in commands:
        args = [a.format(run=run, root=tmp_path) for a in command]
        one_line_exit_2(run_cli(*args), name)


@pytest.mark.parametrize("how", ["truncated", "empty"])
def test_a_damaged_manifest_is_one_line(tiny_split, tmp_path, how):
    data = tmp_path / "data"
    shutil.copytree(tiny_split, data)
    damage(data / "manifest.json", how)
    one_line_exit_2(run_cli("train.py", "--model", "towernet", "--data", data, "--epochs", "1",
                            "--output", tmp_path / "runs", *TINY), "manifest.json")


def test_kill_9_at_seeded_moments_then_resume(tiny_split):
    # bench/kill_resume.py: SIGKILL before the k-th rename of a run file (inside the
    # checkpoint, best, state.json and metrics.csv writes) or after a seeded delay, resume,
    # repeat; then every epoch once, the reference lr column, VisualDL steps unique,
    # best.json matching best.pdparams and no temporary file left.
    proc = run_cli("bench/kill_resume.py", "--data", tiny_split, "--points", "3", "--epochs", "3",
                   "--seed", "1", "--json", timeout=900)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert any(k.startswith("rename#") for r in summary["results"] for k in r["kills"])
    assert summary["clean"] == summary["points"] == 3, summary


def test_resume_against_another_split_needs_force_data(finished_run, tiny_split, tmp_path):
    from data_tools.split import split_dataset

    other = tmp_path / "other"
    split_dataset(tiny_split.parent / "src", other, eval_ratio=0.25, seed=1, progress=False)
    run = copy_unfinished(finished_run, tmp_path)
    proc = run_cli("train.py", "--resume", run, "-o", f"data.root={other}")
    one_line_exit_2(proc, "--force-data")
    run_cli("train.py", "--resume", run, "-o", f"data.root={other}", "--force-data", check=True)
    assert json.loads((run / "state.json").read_text())["status"] == "finished"
    # The same split copied elsewhere is the same data: no flag needed.
    moved = tmp_path / "moved"
    shutil.copytree(tiny_split, moved)
    run2 = copy_unfinished(finished_run, tmp_path / "b")
    run_cli("train.py", "--resume", run2, "-o", f"data.root={moved}", check=True)


def test_disk_full_while_saving_stops_cleanly_and_resumes(tiny_split, tmp_path, monkeypatch):
    import errno

    import paddle

    from app.config.load import load_config
    from app.train import trainer

    cfg = load_config(model="towernet", overrides=[
        ("data.root", str(tiny_split)), ("output.dir", str(tmp_path)), ("train.epochs", 3),
        ("data.image_size", 32), ("train.batch_size", 12), ("data.cache", False)])
    real_save, calls = paddle.save, {"n": 0}

    def full_disk(obj, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # epoch 1's saves are done (last x2 at epoch 0, best + last x2)
            with open(path, "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(paddle, "save", full_disk)
    with pytest.raises(trainer.RunStopped) as e:
        trainer.train(cfg)
    assert e.value.exit_code == 4 and "disk is full" in str(e.value) and "--resume" in str(e.value)
    monkeypatch.setattr(paddle, "save", real_save)
    run = tmp_path / "towernet"
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    paddle.load(str(run / "best.pdparams"))  # still whole
    trainer.train(RunFolder(run).read_config(), run)
    assert [r["epoch"] for r in RunFolder(run).read_metrics()] == [1, 2, 3]


def test_resume_in_a_process_that_built_other_models_first(tiny_split, tmp_path):
    # last.pdopt is keyed by structured names: Paddle's generated names (conv2d_57.w_0...)
    # differ in a process that built other networks before, and no name scope is needed.
    import contextlib

    import numpy as np
    import paddle

    from app.config.load import load_config
    from app.train import trainer
    from models import create_model

    def cfg(out):
        return load_config(model="towernet_se", overrides=[
            ("data.root", str(tiny_split)), ("output.dir", str(out)), ("train.epochs", 3),
            ("data.image_size", 32), ("train.batch_size", 12), ("data.cache", False),
            ("data.rotation", 0), ("data.hflip", False)])

    full = trainer.train(cfg(tmp_path / "full"))
    keys = paddle.load(str(full / "last.pdopt")).keys()
    assert "b1.0.0.weight@velocity" in keys and not any(k.startswith("conv2d_") for k in keys)

    train_cut_in_epoch_2(cfg(tmp_path / "cut"), tmp_path / "cut" / "towernet_se")
    for name in ("resnet50", "mobilenet_v2_se", "towernet_cbam"):  # shift the generated names
        create_model(name)
    run = tmp_path / "cut" / "towernet_se"
    with contextlib.ExitStack() as locks:  # no fresh name scope
        trainer._train(RunFolder(run).read_config(), RunFolder(run), False, locks, False)
    a, b = paddle.load(str(full / "last.pdparams")), paddle.load(str(run / "last.pdparams"))
    for k in a:
        np.testing.assert_allclose(b[k].numpy(), a[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("extra", [[], [("data.randaugment", [2, 9]), ("train.mixup_alpha", 0.2)]],
                         ids=["reference", "randaugment+mixup"])
def test_interrupted_run_with_random_augmentation_resumes_to_the_same_weights(tiny_split, tmp_path, extra):
    """Every epoch reseeds from (seed, epoch) (callbacks.EpochSeed), so the augmentation a
    resumed run draws is the one the uninterrupted run drew."""
    import numpy as np
    import paddle

    from app.config.load import load_config
    from app.train import trainer

    def cfg(out):
        return load_config(model="mobilenet_v2", overrides=[  # with dropout
            ("data.root", str(tiny_split)), ("output.dir", str(out)), ("train.epochs", 3),
            ("data.image_size", 32), ("train.batch_size", 12), ("data.cache", False), *extra])

    full = trainer.train(cfg(tmp_path / "full"))
    run = tmp_path / "cut" / "mobilenet_v2"
    train_cut_in_epoch_2(cfg(tmp_path / "cut"), run)
    trainer.train(RunFolder(run).read_config(), run)
    a, b = paddle.load(str(full / "last.pdparams")), paddle.load(str(run / "last.pdparams"))
    for k in a:
        np.testing.assert_allclose(b[k].numpy(), a[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


def test_atomic_writes_get_the_permissions_open_would_give(tmp_path):
    import os

    from app.util.atomic import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "report.md", "x")
        with open(tmp_path / "plain.md", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "report.md").stat().st_mode == (tmp_path / "plain.md").stat().st_mode


def test_a_layout_the_model_lacks_is_one_line_before_the_data_is_read(tiny_split, tmp_path):
    proc = run_cli("train.py", "--model", "vgg19", "--data", tiny_split, "--epochs", "1",
                   "-o", "train.channels_last=on", "--output", tmp_path / "runs", *TINY,
                   "-o", "data.cache=true")  # the cache would print its progress first
    one_line_exit_2(proc, "no channels-last layout")
    assert not (tmp_path / "runs").exists()


def test_a_config_cut_at_any_line_is_named_by_study_reports(finished_run, tmp_path):
    """Wherever config.yaml was cut before its last section, reading the runs says so (a cut
    file may still parse as YAML and hold every key a report reads)."""
    from app.study.runs import read_runs
    from app.util.errors import UserError

    run = copy_unfinished(finished_run, tmp_path)
    lines = (run / "config.yaml").read_text().splitlines(keepends=True)
    last = max(i for i, line in enumerate(lines) if not line.startswith((" ", "#")))  # "output:"
    assert lines[last].startswith("output:")
    for k in range(last + 1):
        (run / "config.yaml").write_text("".join(lines[:k]))
        with pytest.raises(UserError, match="config.yaml is damaged"):
            read_runs(tmp_path)
    (run / "config.yaml").write_text("".join(lines))
    assert len(read_runs(tmp_path)) == 1


def test_one_process_at_a_time_holds_a_run(tmp_path):
    from app.run.lock import RunBusy, RunLock

    with RunLock(tmp_path):
        with pytest.raises(RunBusy, match=r"being trained by another process \(PID \d+ on "):
            RunLock(tmp_path)
    RunLock(tmp_path).release()  # free again once released


def test_a_run_that_another_process_trains_is_refused_until_that_process_dies(
        finished_run, tiny_split, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from conftest import ROOT

    run = copy_unfinished(finished_run, tmp_path / "study")
    run = run.rename(run.with_name("towernet-s0"))  # the study's name for seed 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from app.run.lock import RunLock; "
         "lock = RunLock(sys.argv[1]); print('held', flush=True); time.sleep(300)", str(run)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        proc = run_cli("train.py", "--resume", run)
        one_line_exit_2(proc, f"being trained by another process (PID {holder.pid} on ")
        # A study skips it with a line and trains the rest (side by side: the worker's path).
        proc = run_cli("train.py", "--models", "towernet", "--seeds", "0,1", "--data", tiny_split,
                       "--epochs", "4", "--jobs", "2", "--output", tmp_path / "study", *TINY)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"towernet-s0: skipped: {run} is being trained by another process" in proc.stdout
        assert len(RunFolder(tmp_path / "study" / "towernet-s1").read_metrics()) == 4
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    run_cli("train.py", "--resume", run, check=True)  # kill -9 dropped the lock
    assert [r["epoch"] for r in RunFolder(run).read_metrics()] == [1, 2, 3, 4]


@pytest.mark.parametrize("when", ["before", "while creating"])
def test_a_study_run_another_study_started_meanwhile_is_left_to_it(finished_run, tiny_split,
                                                                   tmp_path, monkeypatch, when):
    # Two studies started at once on one output both find towernet-s0 missing. The one that
    # creates it second used to pick towernet-s0-2 and train the seed again, a run the report
    # then counted twice; now it leaves the run to the first.
    from app.config.load import load_config
    from app.run import checkpoint
    from app.run.lock import RunBusy
    from app.train import trainer

    cfg = load_config(model="towernet", overrides=[
        ("data.root", str(tiny_split)), ("output.dir", str(tmp_path)), ("output.name", "towernet-s0"),
        ("train.epochs", 3), ("data.image_size", 32), ("train.batch_size", 12),
        ("data.cache", False)])
    run = tmp_path / "towernet-s0"
    if when == "before":
        shutil.copytree(finished_run, run)
    else:  # the other study renames its folder into place while this one writes its own
        save_last = checkpoint.save_last
        monkeypatch.setattr(checkpoint, "save_last",
                            lambda *a: (save_last(*a), shutil.copytree(finished_run, run)))
    with pytest.raises(RunBusy, match="towernet-s0 was started by another process meanwhile"):
        trainer.train(cfg, exact_name=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["towernet-s0"]  # no -2, no temporary
    assert (run / "metrics.csv").read_bytes() == (finished_run / "metrics.csv").read_bytes()


def _session(sid: int) -> list:
    """The processes of session ``sid``, from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[3]) == sid:
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_a_study_whose_parent_alone_is_stopped_stops_its_runs(tiny_split, tmp_path, how):
    # Ctrl-C reaches every process of the terminal's group; `kill -INT <pid>`, a scheduler's
    # signal or a crash reach the study's parent only. Its --jobs workers used to train on.
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    out = tmp_path / "study"
    # SIGINT handled here, so default in the child, as from a terminal (a shell running this
    # suite in the background hands it down ignored).
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, "train.py", "--models", "towernet", "--seeds", "0,1", "--data", tiny_split,
             "--epochs", "500", "--jobs", "2", "--output", out, *TINY], cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True)  # its workers are findable
    finally:
        signal.signal(signal.SIGINT, handler)
    runs = [out / "towernet-s0", out / "towernet-s1"]
    try:
        deadline = time.monotonic() + 300
        while not all(r.is_dir() and RunFolder(r).read_metrics() for r in runs):  # an epoch each
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.5)
        proc.send_signal(getattr(signal, how))
        _, stderr = proc.communicate(timeout=120)
        deadline = time.monotonic() + 60
        while _session(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _session(proc.pid) == [], "workers still running"
    finally:
        for pid in _session(proc.pid):
            os.kill(pid, signal.SIGKILL)
    if how == "SIGINT":
        assert proc.returncode == 130 and "study interrupted" in stderr, stderr[-2000:]
    from app.run.lock import RunLock

    for r in runs:
        assert 1 <= len(RunFolder(r).read_metrics()) < 500
        RunLock(r).release()  # nobody holds it any more: a re-run resumes it
        if how == "SIGINT":  # stopped by its worker, which said so
            assert RunFolder(r).read_state()["status"] == "interrupted"
