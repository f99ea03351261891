"""Sharpness-aware minimisation (optimizer.sam_rho, app/build/sharpness.py)."""
import numpy as np
import paddle
import pytest

from app.build.sharpness import SAMModel, SAMMomentum
from app.config.load import load_config
from app.train.trainer import build_model
from app.util.errors import UserError
from conftest import optimizer_for


def _cfg(**extra):
    overrides = {"optimizer.lr": 0.5, "optimizer.momentum": 0.9, "optimizer.weight_decay": 0.01,
                 "optimizer.sam_rho": 0.2, "train.epochs": 1000, "data.image_size": 2, **extra}
    return load_config(model="towernet", overrides=list(overrides.items()))


def _softmax_grads(x, y, w, b):
    """Mean cross-entropy of softmax(x @ w + b) and its gradients (float64)."""
    z = x @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(w.shape[1])[y]
    dz = (p - onehot) / len(x)
    return -np.log(p[np.arange(len(x)), y]).mean(), x.T @ dz, dz.sum(0)


def test_sam_step_equals_its_formula():
    paddle.seed(0)
    net = paddle.nn.Sequential(paddle.nn.Flatten(), paddle.nn.Linear(12, 3))
    cfg = _cfg()
    model = build_model(cfg, net, 3, 1)
    assert type(model) is SAMModel and type(model._optimizer) is SAMMomentum
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 2, 2)).astype("float32")
    y = np.array([0, 2, 1, 1, 0])
    w, b = net[1].weight.numpy().astype("float64"), net[1].bias.numpy().astype("float64")
    flat = x.reshape(5, -1).astype("float64")

    (loss,), _ = model.train_batch([x], [y.reshape(-1, 1).astype("int64")])

    loss0, gw, gb = _softmax_grads(flat, y, w, b)
    scale = 0.2 / np.sqrt((gw ** 2).sum() + (gb ** 2).sum())
    _, gw2, gb2 = _softmax_grads(flat, y, w + scale * gw, b + scale * gb)
    # Momentum's first step: v = g + wd * w (L2Decay, at the unperturbed w), w -= lr * v
    np.testing.assert_allclose(net[1].weight.numpy(), w - 0.5 * (gw2 + 0.01 * w), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net[1].bias.numpy(), b - 0.5 * (gb2 + 0.01 * b), rtol=1e-5, atol=1e-6)
    assert float(np.asarray(loss).ravel()[0]) == pytest.approx(loss0, rel=1e-5)  # the logged loss is at w
    assert all(p.grad is None or not np.any(p.grad.numpy()) for p in net.parameters())


def test_sam_keeps_the_running_statistics_of_the_pass_at_w():
    """BatchNorm's running statistics after a SAM step are those of a plain step on the same
    batch (the second pass's are put back), while the weights differ."""
    def net():
        paddle.seed(1)
        return paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 1), paddle.nn.BatchNorm2D(4),
                                    paddle.nn.Flatten(), paddle.nn.Linear(16, 3))

    x = np.random.default_rng(1).standard_normal((6, 3, 2, 2)).astype("float32")
    y = np.array([[0], [1], [2], [0], [1], [2]], dtype="int64")
    after = {}
    for rho in (0.0, 0.3):
        n = net()
        cfg = _cfg(**{"optimizer.sam_rho": rho})
        build_model(cfg, n, 3, 1).train_batch([x], [y])
        after[rho] = n
    plain, sam = after[0.0][1], after[0.3][1]
    np.testing.assert_array_equal(sam._mean.numpy(), plain._mean.numpy())
    np.testing.assert_array_equal(sam._variance.numpy(), plain._variance.numpy())
    assert np.any(sam._mean.numpy() != 0)
    assert not np.allclose(after[0.3][0].weight.numpy(), after[0.0][0].weight.numpy())


def test_sam_off_is_the_plain_optimizer_and_model():
    cfg = _cfg(**{"optimizer.sam_rho": 0.0})
    net = paddle.nn.Linear(12, 3)
    model = build_model(cfg, net, 3, 1)
    assert type(model._optimizer) is paddle.optimizer.Momentum
    assert type(model) is paddle.Model


@pytest.mark.parametrize("overrides, message", [
    ({"optimizer.sam_rho": -0.1}, "'optimizer.sam_rho' must be non-negative"),
    ({"train.amp": "bf16"}, "optimizer.sam_rho needs train.amp=off"),
])
def test_bad_sam_settings_are_refused(overrides, message):
    with pytest.raises(UserError, match=message):
        _cfg(**overrides)


def test_interrupted_sam_run_resumes_exactly(tiny_split, tmp_path):
    from app.run.folder import RunFolder
    from app.train import trainer
    from conftest import train_cut_in_epoch_2

    def cfg(out):
        return load_config(model="towernet", overrides=[
            ("data.root", str(tiny_split)), ("output.dir", str(out)), ("train.epochs", 3),
            ("data.image_size", 32), ("train.batch_size", 12), ("data.cache", False),
            ("data.rotation", 0), ("data.hflip", False), ("optimizer.sam_rho", 0.05)])

    full = trainer.train(cfg(tmp_path / "full"))
    train_cut_in_epoch_2(cfg(tmp_path / "cut"), tmp_path / "cut" / "towernet")
    run = tmp_path / "cut" / "towernet"
    trainer.train(RunFolder(run).read_config(), run)
    a, b = RunFolder(full).read_metrics(), RunFolder(run).read_metrics()
    assert [r["train_loss"] for r in b] == pytest.approx([r["train_loss"] for r in a], rel=1e-4)
    pa, pb = paddle.load(str(full / "last.pdparams")), paddle.load(str(run / "last.pdparams"))
    for k in pa:
        np.testing.assert_allclose(pb[k].numpy(), pa[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


def test_sam_refuses_data_parallel(monkeypatch):
    from app.build import optimizer

    monkeypatch.setattr(optimizer, "world_size", lambda: 2)
    with pytest.raises(UserError, match="not supported with data-parallel"):
        optimizer_for(_cfg(), paddle.nn.Linear(12, 3), 1)


@pytest.mark.skipif(not __import__("backend").onednn.available(), reason="no oneDNN path here")
def test_sam_step_through_the_onednn_channels_last_path_equals_paddles():
    """The second pass sees the perturbed weights through the oneDNN convolutions too: one
    SAM step of channels-last towernet_simam equals the same step of Paddle's own NCHW
    network, and differs from a plain step by far more than the two paths differ. (rho stays
    small: at rho 0.5 this random batch's gradient at w + e is chaotic, moved 10% by a 2e-6
    weight noise in Paddle's own path, so no two paths could agree there.)"""
    from app.build.network import build_network

    x = np.random.default_rng(2).standard_normal((8, 3, 32, 32)).astype("float32")
    y = np.arange(8, dtype="int64").reshape(-1, 1) % 4
    after, start = {}, None
    for layout, rho in (("on", 0.05), ("off", 0.05), ("off", 0.0)):
        cfg = load_config(model="towernet_simam", overrides=[
            ("optimizer.lr", 0.1), ("optimizer.sam_rho", rho), ("data.image_size", 32),
            ("train.channels_last", layout), ("train.epochs", 1000)])
        paddle.seed(0)
        net = build_network("towernet_simam", 4, channels_last=layout == "on")
        if after:  # the same starting weights for all three (state dicts share one layout)
            net.set_state_dict(start)
        else:
            start = {k: v.clone() for k, v in net.state_dict().items()}
        build_model(cfg, net, 4, 1).train_batch([x], [y])
        after[layout, rho] = {k: v.numpy() for k, v in net.state_dict().items()}
    moved = {k: np.abs(after["off", 0.05][k] - after["off", 0.0][k]).max() for k in start}
    paths = {k: np.abs(after["on", 0.05][k] - after["off", 0.05][k]).max() for k in start}
    key = max(moved, key=moved.get)
    assert moved[key] > 1e-2 and paths[key] < moved[key] / 100, (key, moved[key], paths[key])
    for k in start:
        np.testing.assert_allclose(after["on", 0.05][k], after["off", 0.05][k], rtol=1e-3, atol=1e-4, err_msg=k)
