"""Export to a Paddle inference model and predict through paddle.inference (CPU)."""
import json

import numpy as np
import paddle
import pytest

from app.inspect import export
from app.inspect.evaluate import eval_dataset, find_checkpoint, load_network
from app.inspect.predict import softmax
from conftest import run_cli


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """(run folder, export folder): the shared towernet_simam run (64 px) exported."""
    runs, _ = tiny_run
    run = runs / "towernet_simam"
    out = tmp_path_factory.mktemp("export") / "towernet_simam"
    weights, meta = find_checkpoint(run)
    assert export.export_model(weights, meta, out) == out
    return run, out


def eval_batch(meta, n=8) -> np.ndarray:
    ds = eval_dataset(meta)
    return np.stack([ds[i][0] for i in range(n)])


def test_export_folder_holds_model_and_metadata(exported):
    run, out = exported
    info = json.loads((out / export.EXPORT_META).read_text())
    best = json.loads((run / "best.json").read_text())
    for key in ("classes", "image_size", "mean", "std", "model", "num_classes"):
        assert info[key] == best[key], key
    assert info["input"]["shape"] == [None, 3, 64, 64]
    assert (out / info["program"]).is_file() and (out / info["params"]).is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_exported_model_equals_dygraph_softmax(exported):
    run, out = exported
    weights, meta = find_checkpoint(run)
    batch = eval_batch(meta)
    with paddle.no_grad():
        expected = softmax(load_network(weights, meta)(paddle.to_tensor(batch)).numpy())

    static = paddle.jit.load(str(out / "model"))
    static.eval()
    np.testing.assert_allclose(static(paddle.to_tensor(batch)).numpy(), expected, rtol=0, atol=1e-5)

    probs = export.InferencePredictor(out).predict(batch)
    assert probs.shape == (len(batch), meta["num_classes"])
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # Batch size is free ([None, 3, S, S]); the image size is fixed.
    assert export.InferencePredictor(out).predict(batch[:1]).shape == (1, meta["num_classes"])
    with pytest.raises(ValueError, match="64, 64"):
        export.InferencePredictor(out).predict(np.zeros((1, 3, 32, 32), np.float32))


def test_cli_export_then_predict_through_paddle_inference(tiny_run, tiny_split, tmp_path):
    runs, _ = tiny_run
    run, out = runs / "towernet_simam", tmp_path / "deploy" / "model"
    proc = run_cli("eval.py", "--run", run, "--export", out, check=True)
    assert str(out) in proc.stdout
    run_cli("eval.py", "--run", run, "--export", out, check=True)  # replaces its own export
    assert [p.name for p in out.parent.iterdir()] == ["model"]

    images = sorted(p for p in (tiny_split / "eval").rglob("*") if p.is_file())[:4]
    dygraph = run_cli("eval.py", "--run", run, "--image", *images, "--topk", "2", check=True)
    inference = run_cli("eval.py", "--model-dir", out, "--image", *images, "--topk", "2",
                        check=True)
    lines = [proc.stdout.strip().splitlines() for proc in (dygraph, inference)]
    assert len(lines[0]) == len(lines[1]) == 4
    for a, b in zip(*lines):
        path_a, preds_a = a.split(": ", 1)
        path_b, preds_b = b.split(": ", 1)
        assert path_a == path_b
        assert preds_a.split()[0] == preds_b.split()[0]  # the same top-1 class
        probs_a = [float(t) for t in preds_a.replace(",", " ").split()[1::2]]
        probs_b = [float(t) for t in preds_b.replace(",", " ").split()[1::2]]
        np.testing.assert_allclose(probs_a, probs_b, atol=1.5e-3)  # printed with 3 decimals


def test_bad_export_targets_exit_2(tiny_run, tmp_path):
    runs, _ = tiny_run
    run = runs / "towernet_simam"
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    cases = [
        (["--run", run, "--export", a_file], "a file is in the way"),
        (["--run", run, "--export", run], "other than an export"),
        (["--run", run, "--export", a_file / "below"], str(a_file)),
        (["--model-dir", run, "--image", a_file], "not an exported model"),
        (["--model-dir", tmp_path], "--image"),
    ]
    for args, message in cases:
        proc = run_cli("eval.py", *args)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert a_file.read_text() == "not a folder"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
