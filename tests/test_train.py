"""Training and evaluation end to end on a generated split (CPU, 64 px, seconds per run)."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from app.build.loss import ClassificationLoss
from app.config.load import load_config
from app.run.folder import METRIC_COLUMNS, RunFolder
from app.train import trainer
from app.util.atomic import atomic_save
from backend import onednn
from conftest import FAST_TRAIN as FAST
from conftest import ROOT, run_cli


def small_cfg(data, out, model="towernet", epochs=2, **over):
    pairs = [("data.root", str(data)), ("output.dir", str(out)), ("train.epochs", epochs),
             ("data.image_size", 64), ("train.batch_size", 12), ("data.cache", False)]
    return load_config(model=model, overrides=pairs + list(over.items()))


def direct_predictions(run_dir, data, flip=False) -> tuple:
    """(predicted classes, labels) of best.pdparams on the eval split, computed without
    app.inspect.evaluate; ``flip``: the mean of the image's and its mirror image's softmax."""
    from app.data.dataset import ImageFolderDataset
    from models import create_model

    meta = json.loads((run_dir / "best.json").read_text())
    net = create_model(meta["model"], num_classes=meta["num_classes"])
    net.set_state_dict(paddle.load(str(run_dir / "best.pdparams")))
    net.eval()
    ds = ImageFolderDataset(data, "eval", image_size=meta["image_size"], train=False)
    pred, labels = [], []
    with paddle.no_grad():
        for i in range(len(ds)):
            image, label = ds[i]
            probs = paddle.nn.functional.softmax(net(paddle.to_tensor(image[None]))).numpy()
            if flip:
                mirror = np.ascontiguousarray(image[None, :, :, ::-1])
                probs = probs + paddle.nn.functional.softmax(net(paddle.to_tensor(mirror))).numpy()
            pred.append(int(probs.argmax()))
            labels.append(int(label[0]))
    return np.array(pred), np.array(labels)


def direct_top1(run_dir, data) -> float:
    """Accuracy of best.pdparams on the eval split, computed without app.inspect.evaluate."""
    pred, labels = direct_predictions(run_dir, data)
    return float((pred == labels).mean())


def test_train_then_eval_end_to_end(tiny_split, tiny_run):
    runs, stdout = tiny_run
    run = runs / "towernet_simam"
    assert "epoch 2/2" in stdout
    rows = RunFolder(run).read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(METRIC_COLUMNS) == set(rows[0])
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "finished" and state["epoch"] == 2
    best = json.loads((run / "best.json").read_text())
    # metrics.csv keeps 6 significant digits, best.json the full float
    assert best["eval_acc"] == pytest.approx(max(r["eval_acc"] for r in rows), abs=1e-6)
    assert best["classes"] == json.loads((tiny_split / "manifest.json").read_text())["classes"]
    assert any(p.name.startswith("vdlrecords") for p in run.iterdir())

    proc = run_cli("eval.py", "--run", run, check=True)
    result = json.loads((run / "eval.json").read_text())
    assert result["top1"] == pytest.approx(direct_top1(run, tiny_split), abs=1e-9)
    assert result["top1"] == pytest.approx(best["eval_acc"], abs=1e-6)
    assert np.array(result["confusion_matrix"]).sum() == result["num_images"] == 12
    assert (run / "confusion_matrix.png").stat().st_size > 0
    assert (run / "misclassified.png").stat().st_size > 0

    image = next((tiny_split / "eval").rglob("*.png"), None) or next(
        p for p in (tiny_split / "eval").rglob("*") if p.is_file())
    proc = run_cli("eval.py", "--run", run, "--image", image, "--topk", "3", check=True)
    probs = [float(tok) for tok in proc.stdout.replace(",", " ").split()[2::2]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True)

    proc = run_cli("eval.py", "--compare", runs, "--out", run, check=True)
    assert "towernet_simam" in proc.stdout and (run / "compare.png").is_file()


def test_last_checkpoint_reports_its_own_epoch(tiny_run, tmp_path):
    """--checkpoint last.pdparams borrows best.json's model description, not its epoch."""
    import shutil

    from app.inspect.evaluate import find_checkpoint

    run = tmp_path / "run"
    shutil.copytree(tiny_run[0] / "towernet_simam", run)
    state = json.loads((run / "state.json").read_text())
    (run / "state.json").write_text(json.dumps({**state, "epoch": 7}))
    best = json.loads((run / "best.json").read_text())["epoch"]
    assert find_checkpoint(checkpoint=run / "last.pdparams")[1]["epoch"] == 7
    assert find_checkpoint(checkpoint=run / "last.pdparams")[1]["eval_acc"] is None
    assert find_checkpoint(run=run)[1]["epoch"] == best
    (run / "state.json").unlink()
    assert find_checkpoint(checkpoint=run / "last.pdparams")[1]["epoch"] is None


def test_flip_tta_averages_each_image_with_its_mirror(tiny_split, tiny_run, tmp_path):
    run = tiny_run[0] / "towernet_simam"
    proc = run_cli("eval.py", "--run", run, "--tta", "flip", "--out", tmp_path, check=True)
    assert "(flip TTA)" in proc.stdout
    result = json.loads((tmp_path / "eval.json").read_text())
    pred, labels = direct_predictions(run, tiny_split, flip=True)
    expected = np.zeros((4, 4), int)
    np.add.at(expected, (labels, pred), 1)
    assert result["tta"] == "flip" and result["confusion_matrix"] == expected.tolist()
    assert result["top1"] == pytest.approx(float((pred == labels).mean()))

    # one image: the printed probabilities are the mean of the two views', not the plain ones
    image = sorted(p for p in (tiny_split / "eval").rglob("*") if p.is_file())[0]
    meta = json.loads((run / "best.json").read_text())
    from app.inspect.evaluate import load_network
    from app.inspect.predict import load_image_batch
    batch = load_image_batch([image], meta)
    net = load_network(run / "best.pdparams", meta)
    views = [paddle.nn.functional.softmax(net(paddle.to_tensor(b))).numpy()[0]
             for b in (batch, np.ascontiguousarray(batch[..., ::-1]))]
    printed = {}
    for tta in ("none", "flip"):
        out = run_cli("eval.py", "--run", run, "--image", image, "--topk", "4", "--tta", tta,
                      check=True).stdout
        pairs = out.split(": ", 1)[1].replace(",", " ").split()
        shown = dict(zip(pairs[::2], map(float, pairs[1::2])))
        printed[tta] = np.array([shown[c] for c in meta["classes"]])
    np.testing.assert_allclose(printed["flip"], (views[0] + views[1]) / 2, atol=6e-4)
    np.testing.assert_allclose(printed["none"], views[0], atol=6e-4)
    assert np.abs(views[0] - views[1]).max() > 2e-3  # the two views differ, so the check can fail


def test_new_run_name_when_folder_exists(tmp_path):
    (tmp_path / "towernet").mkdir()
    assert RunFolder.free_name(tmp_path, "towernet").path == tmp_path / "towernet-2"


INTERRUPT_AFTER_EPOCH_1 = r"""
import json, os, runpy, signal, sys
from pathlib import Path
sys.argv = sys.argv[1:]
sys.path.insert(0, os.getcwd())
import app
from app.build.loss import ClassificationLoss
# As in a terminal; a shell running this suite in the background hands SIGINT down ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
state, forward = Path(os.environ["CUT_STATE"]), ClassificationLoss.forward
def forward_then_interrupt(self, *args, **kwargs):
    if state.is_file() and json.loads(state.read_text()).get("epoch", 0) >= 1:
        os.kill(os.getpid(), signal.SIGINT)
    return forward(self, *args, **kwargs)
ClassificationLoss.forward = forward_then_interrupt
if os.environ.get("CUT_WHERE") == "conv_backward":  # inside a PyLayer's backward (oneDNN conv)
    from backend import onednn
    backward = onednn._OneDnnConv2D.backward
    def backward_then_interrupt(ctx, dy):
        if state.is_file() and json.loads(state.read_text()).get("epoch", 0) >= 1:
            os.kill(os.getpid(), signal.SIGINT)
        return backward(ctx, dy)
    ClassificationLoss.forward = forward
    onednn._OneDnnConv2D.backward = staticmethod(backward_then_interrupt)
runpy.run_path("train.py", run_name="__main__")
"""


@pytest.mark.parametrize("where", ["loss", "conv_backward"])
def test_interrupt_then_resume_matches_uninterrupted(tiny_split, tmp_path, where):
    if where == "conv_backward" and not onednn.available():
        pytest.skip("no oneDNN path: the convs have no PyLayer backward to interrupt")
    epochs = "4"
    args = ["train.py", "--model", "towernet", "--data", tiny_split, "--epochs", epochs, *FAST]
    run_cli(*args, "--output", tmp_path / "full", check=True)
    full = RunFolder(tmp_path / "full" / "towernet").read_metrics()

    run = tmp_path / "cut" / "towernet"
    # A real SIGINT, sent by the process to itself on epoch 2's first step: polling state.json
    # from here raced a run that now finishes its remaining epochs in well under a second.
    env = {**os.environ, "CUT_STATE": str(run / "state.json"), "CUT_WHERE": where}
    proc = subprocess.run([sys.executable, "-c", INTERRUPT_AFTER_EPOCH_1, *map(str, args),
                           "--output", tmp_path / "cut"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    err = proc.stderr
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "interrupted" and 1 <= state["epoch"] < 4

    run_cli("train.py", "--resume", run, check=True)
    resumed = RunFolder(run).read_metrics()
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["lr"] for r in resumed], [r["lr"] for r in full], rtol=1e-6)
    assert json.loads((run / "state.json").read_text())["status"] == "finished"
    proc = run_cli("train.py", "--resume", run, check=True)
    assert "already finished" in proc.stdout


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_split, tmp_path, monkeypatch):
    forward = ClassificationLoss.forward
    calls = {"n": 0}
    steps_per_epoch = 3  # 36 train images / batch 12

    def poisoned(self, logits, label):
        calls["n"] += 1
        loss = forward(self, logits, label)
        return loss * float("nan") if calls["n"] > steps_per_epoch + 1 else loss

    monkeypatch.setattr(ClassificationLoss, "forward", poisoned)
    cfg = small_cfg(tiny_split, tmp_path, epochs=3)
    with pytest.raises(trainer.RunStopped) as stopped:
        trainer.train(cfg)
    assert stopped.value.exit_code == 3 and "nan" in str(stopped.value).lower()
    run = tmp_path / "towernet"
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "diverged" and state["epoch"] == 1
    assert [r["epoch"] for r in RunFolder(run).read_metrics()] == [1]
    for name in ("last.pdparams", "best.pdparams"):
        weights = paddle.load(str(run / name))
        assert all(np.isfinite(v.numpy()).all() for v in weights.values())


def test_crash_during_save_keeps_previous_best(tiny_split, tmp_path, monkeypatch):
    cfg = small_cfg(tiny_split, tmp_path, epochs=1)
    run = trainer.train(cfg)
    before = {k: v.numpy() for k, v in paddle.load(str(run / "best.pdparams")).items()}

    real_save = paddle.save

    def crashing_save(obj, path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(paddle, "save", crashing_save)
    with pytest.raises(OSError):
        atomic_save({"w": paddle.ones([3])}, run / "best.pdparams")
    monkeypatch.setattr(paddle, "save", real_save)
    after = paddle.load(str(run / "best.pdparams"))
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k].numpy()) for k in before)
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("args, message", [
    (["--model", "no_such_net"], "unknown model"),
    (["-o", "train.no_such_key=1"], "train.no_such_key"),
    (["-o", "train.epochs=many"], "train.epochs"),
    (["--epochs", "0"], "train.epochs"),
    (["-c", "configs/missing.yaml"], "missing.yaml"),
    (["--resume", "runs/does-not-exist"], "does-not-exist"),
])
def test_train_user_errors_exit_2(tiny_split, tmp_path, args, message):
    proc = run_cli("train.py", "--data", tiny_split, "--output", tmp_path, *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_train_missing_or_empty_data_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    for data in (tmp_path / "nothing-here", tmp_path / "empty"):
        proc = run_cli("train.py", "--data", data, "--output", tmp_path / "runs", *FAST)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and str(data.name) in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_eval_user_errors_exit_2(tmp_path):
    (tmp_path / "unfinished").mkdir()
    bad_image = tmp_path / "bad.jpg"
    bad_image.write_bytes(b"not an image")
    cases = [["--run", tmp_path / "missing"], ["--run", tmp_path / "unfinished"],
             ["--compare", tmp_path / "unfinished"], ["--checkpoint", tmp_path / "x.pdparams"]]
    for args in cases:
        proc = run_cli("eval.py", *args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr


def test_eval_unreadable_image_exit_2(tiny_split, tmp_path):
    run = trainer.train(small_cfg(tiny_split, tmp_path, epochs=1))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    proc = run_cli("eval.py", "--run", run, "--image", bad)
    assert proc.returncode == 2 and "bad.jpg" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_channels_last_run_records_its_layout_and_tracks_the_nchw_run(tiny_split, tmp_path):
    runs = {cl: trainer.train(small_cfg(tiny_split, tmp_path / cl, model="towernet_simam", epochs=1,
                                        **{"train.channels_last": cl, "log.images": False}))
            for cl in ("auto", "off")}
    layouts = {cl: json.loads((run / "best.json").read_text())["layout"] for cl, run in runs.items()}
    assert layouts == {"auto": "NHWC" if onednn.available() else "NCHW", "off": "NCHW"}
    rows = {cl: RunFolder(run).read_metrics()[0] for cl, run in runs.items()}
    assert rows["auto"]["train_loss"] == pytest.approx(rows["off"]["train_loss"], rel=1e-3)
    # The checkpoint is layout-free: the channels-last run's weights evaluate in an NCHW model.
    assert direct_top1(runs["auto"], tiny_split) == pytest.approx(rows["auto"]["eval_acc"], abs=1e-6)
