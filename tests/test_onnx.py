"""ONNX export (paddle2onnx) and onnxruntime prediction, and what happens without them."""
import json

import numpy as np
import paddle
import pytest

from app.inspect import export
from app.inspect.evaluate import find_checkpoint, load_network
from app.inspect.predict import softmax
from app.util.errors import UserError
from conftest import run_cli
from models import create_model
from models.attention import list_attentions

pytest.importorskip("paddle2onnx", reason="requirements-deploy.txt is not installed")
pytest.importorskip("onnxruntime", reason="requirements-deploy.txt is not installed")


def checkpoint(tmp_path, name, size=32, classes=5):
    """A fresh ``name`` saved as a checkpoint with the best.json meta export needs."""
    paddle.seed(0)
    net = create_model(name, num_classes=classes)
    weights = tmp_path / f"{name}.pdparams"
    paddle.save(net.state_dict(), str(weights))
    meta = {"model": name, "model_kwargs": {}, "num_classes": classes,
            "classes": [f"c{i}" for i in range(classes)], "image_size": size,
            "mean": [0.5] * 3, "std": [0.25] * 3}
    return weights, meta


def dygraph_probs(weights, meta, batch):
    with paddle.no_grad():
        return softmax(load_network(weights, meta)(paddle.to_tensor(batch)).numpy())


@pytest.mark.parametrize("batch_size", [1, 3])
def test_onnx_equals_dygraph_softmax_for_the_tiny_run(tiny_run, tmp_path, batch_size):
    runs, _ = tiny_run
    weights, meta = find_checkpoint(runs / "towernet_simam")
    out = export.export_model(weights, meta, tmp_path / "onnx", "onnx")
    info = json.loads((out / export.EXPORT_META).read_text())
    assert info["format"] == "onnx" and info["opset"] == 13 and sorted(p.name for p in out.iterdir()) == [
        "export.json", "model.onnx"]
    batch = np.random.default_rng(batch_size).standard_normal((batch_size, 3, 64, 64)).astype("float32")
    predictor = export.load_predictor(out)
    assert isinstance(predictor, export.OnnxPredictor)
    np.testing.assert_allclose(predictor.predict(batch), dygraph_probs(weights, meta, batch), atol=1e-5)


@pytest.mark.parametrize("name", ["resnet50_se"] + [f"towernet_{a}" for a in list_attentions()])
def test_onnx_equals_dygraph_for_every_attention(tmp_path, name):
    weights, meta = checkpoint(tmp_path, name)
    # a trained non-local block is not the identity: give its BN scale a value
    net = load_network(weights, meta)
    for layer in net.sublayers():
        if type(layer).__name__ == "NonLocal":
            paddle.nn.initializer.Constant(0.5)(layer.bn.weight)
    paddle.save(net.state_dict(), str(weights))
    out = export.export_model(weights, meta, tmp_path / "onnx", "onnx")
    predictor = export.load_predictor(out)
    for n in (1, 3):
        batch = np.random.default_rng(n).standard_normal((n, 3, 32, 32)).astype("float32")
        np.testing.assert_allclose(predictor.predict(batch), dygraph_probs(weights, meta, batch),
                                   atol=1e-5)


def test_opset_outside_7_to_21_is_refused(tmp_path):
    weights, meta = checkpoint(tmp_path, "towernet")
    for opset in (6, 22):
        with pytest.raises(UserError, match="--opset must be 7-21"):
            export.export_model(weights, meta, tmp_path / "x", "onnx", opset)
    assert not (tmp_path / "x").exists()


def test_cli_export_onnx_then_predict(tiny_run, tiny_split, tmp_path):
    runs, _ = tiny_run
    out = tmp_path / "deploy"
    run_cli("eval.py", "--run", runs / "towernet_simam", "--export", out, "--format", "onnx",
            "--opset", "17", check=True)
    assert json.loads((out / "export.json").read_text())["opset"] == 17
    image = next(p for p in (tiny_split / "eval").rglob("*") if p.is_file())
    proc = run_cli("eval.py", "--model-dir", out, "--image", image, "--topk", "2", check=True)
    assert proc.stdout.count(",") == 1 and str(image) in proc.stdout
    proc = run_cli("eval.py", "--run", runs / "towernet_simam", "--export", tmp_path / "y",
                   "--format", "onnx", "--opset", "99")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--opset" in proc.stderr


def test_without_the_deploy_packages_onnx_is_one_line_exit_2(tiny_run, tmp_path):
    runs, _ = tiny_run
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "paddle2onnx.py").write_text("raise ImportError('not installed')\n")
    import os

    from conftest import ROOT
    env_path = f"{blocker}{os.pathsep}{ROOT}"
    proc = run_cli("eval.py", "--run", runs / "towernet_simam", "--export", tmp_path / "z",
                   "--format", "onnx", env={**os.environ, "PYTHONPATH": env_path})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "requirements-deploy.txt" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "z").exists()
