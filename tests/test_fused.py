"""backend.fused: the BatchNorm + ReLU6 kernel computes what Paddle's BN and ReLU6 do."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddle import nn

from backend import fused, onednn

pytestmark = pytest.mark.skipif(not onednn.available(), reason="this Paddle build has no usable libdnnl")


def kernel():
    lib = fused.load()
    if lib is None:
        pytest.skip(f"the fused kernel did not build here: {fused.reason()}")
    return lib


def reference(x, dy, scale, shift, eps, lo=0.0, hi=6.0):
    """BN (batch statistics, biased variance) + clip and its gradients, in float64."""
    x2, g = x.reshape(-1, x.shape[-1]).astype(np.float64), dy.reshape(-1, x.shape[-1]).astype(np.float64)
    mean, var = x2.mean(0), x2.var(0)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = (x2 - mean) * rstd
    v = xhat * scale + shift
    dz = g * ((v > lo) & (v < hi))
    dshift, dscale = dz.sum(0), (dz * xhat).sum(0)
    dx = scale * rstd * (dz - dshift / len(x2) - xhat * dscale / len(x2))
    return np.clip(v, lo, hi).reshape(x.shape), mean, var, dx.reshape(x.shape), dscale, dshift


@pytest.mark.parametrize("shape", [(3, 5, 7, 32), (2, 9, 9, 48), (4, 16, 16, 96), (1, 1, 3, 16)])
def test_kernel_matches_float64_batch_norm_and_clip(shape):
    lib = kernel()
    rng = np.random.default_rng(sum(shape))
    c = shape[-1]
    x = (rng.standard_normal(shape) * 2 + 3).astype(np.float32)  # an offset mean: the shifted sums
    dy = rng.standard_normal(shape).astype(np.float32)
    scale = rng.uniform(0.5, 3, c).astype(np.float32)
    shift = rng.uniform(-1, 1, c).astype(np.float32)
    t = {k: paddle.to_tensor(v) for k, v in dict(x=x, dy=dy, scale=scale, shift=shift).items()}
    y, mean, var = fused.forward(lib, t["x"], t["scale"], t["shift"], 1e-5, 0.0, 6.0)
    dx, dscale, dshift = fused.backward(lib, t["x"], t["dy"], t["scale"], t["shift"], mean, var, 1e-5, 0.0, 6.0)
    ry, rmean, rvar, rdx, rdscale, rdshift = reference(x, dy, scale, shift, 1e-5)
    for got, want in ((y, ry), (mean, rmean), (var, rvar), (dx, rdx), (dscale, rdscale), (dshift, rdshift)):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert 0.0 < (ry == 0).mean() < 1.0  # the clip was hit (and its top too, on the larger maps)
    assert (ry == 6).any() or x.size < 1000


def bn_layer(c, rng):
    bn = nn.BatchNorm2D(c, data_format="NHWC")
    bn.weight.set_value(rng.uniform(0.5, 3, c).astype(np.float32))
    bn.bias.set_value(rng.uniform(-1, 1, c).astype(np.float32))
    return bn


def train_pass(bn, x, dy, fn):
    xt = paddle.to_tensor(x, stop_gradient=False)
    bn.clear_gradients()
    y = fn(xt)
    y.backward(paddle.to_tensor(dy))
    return [t.numpy() for t in (y, xt.grad, bn.weight.grad, bn.bias.grad, bn._mean, bn._variance)]


@pytest.mark.parametrize("c", [32, 24])  # 24: not a multiple of 16, so oneDNN's BN + Paddle's ReLU6
def test_batch_norm_relu6_trains_like_paddles_bn_and_relu6(c):
    kernel()
    rng = np.random.default_rng(c)
    x = (rng.standard_normal((4, 6, 6, c)) * 1.5 + 0.5).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    ours, paddles = bn_layer(c, rng), None
    paddles = nn.BatchNorm2D(c, data_format="NHWC")
    paddles.set_state_dict(ours.state_dict())
    for layer in (ours, paddles):
        layer.train()
    for _ in range(2):  # the running statistics move the same way twice
        got = train_pass(ours, x, dy, lambda t: onednn.batch_norm(t, ours, relu6=True))
        want = train_pass(paddles, x, dy, lambda t: F.relu6(paddles(t)))
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * np.abs(w).max())
    ours.eval()
    paddles.eval()
    with paddle.no_grad():
        np.testing.assert_allclose(onednn.batch_norm(paddle.to_tensor(x), ours, relu6=True).numpy(),
                                   F.relu6(paddles(paddle.to_tensor(x))).numpy(), rtol=1e-5, atol=1e-5)


def test_without_the_kernel_the_pair_runs_as_before(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 5, 32)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    bn = bn_layer(32, rng)
    bn.train()
    state = {k: v.numpy().copy() for k, v in bn.state_dict().items()}
    with_kernel = train_pass(bn, x, dy, lambda t: onednn.batch_norm(t, bn, relu6=True))
    bn.set_state_dict(state)
    monkeypatch.setenv("TOWERNET_FUSED", "0")
    assert fused.load() is None and fused.reason() == "TOWERNET_FUSED=0"
    without = train_pass(bn, x, dy, lambda t: onednn.batch_norm(t, bn, relu6=True))
    for g, w in zip(with_kernel, without):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * np.abs(w).max())
    # No compiler: load() says why and gives None; nothing else changes.
    monkeypatch.setenv("TOWERNET_FUSED", "1")
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setattr(fused, "_LIB", None)
    monkeypatch.setattr(fused, "_REASON", None)
    assert fused.load() is None and "/nonexistent/cc" in fused.reason()
    bn.set_state_dict(state)
    no_compiler = train_pass(bn, x, dy, lambda t: onednn.batch_norm(t, bn, relu6=True))
    for g, w in zip(no_compiler, without):
        np.testing.assert_array_equal(g, w)


def test_convert_fuses_mobilenet_v2s_channels_last_bn_relu6_pairs_only():
    from models import create_model

    fast = create_model("mobilenet_v2", num_classes=5, data_format="NHWC")
    plain = create_model("mobilenet_v2", num_classes=5)
    kinds = [type(m) for m in fast.sublayers()]
    assert kinds.count(onednn.BatchNormReLU6) == kinds.count(onednn.ClippedBefore) == 35
    assert kinds.count(onednn.BatchNorm2D) == 17  # the projections' BN, which no ReLU6 follows
    assert nn.ReLU6 not in kinds
    assert not any(isinstance(m, (onednn.BatchNormReLU6, onednn.ClippedBefore)) for m in plain.sublayers())
    assert list(fast.state_dict()) == list(plain.state_dict())
    resnet = create_model("resnet50", num_classes=5, data_format="NHWC")
    assert not any(isinstance(m, onednn.BatchNormReLU6) for m in resnet.sublayers())


def test_fused_paths_run_no_separate_activation(monkeypatch):
    """The ReLU fused by oneDNN's BN and the ReLU6 fused by the kernel are not applied again."""
    kernel()
    calls = []
    monkeypatch.setattr(onednn.F, "relu", lambda *a, **k: calls.append("relu"))
    monkeypatch.setattr(onednn.F, "relu6", lambda *a, **k: calls.append("relu6"))
    rng = np.random.default_rng(1)
    x = paddle.to_tensor(rng.standard_normal((2, 4, 4, 32)).astype(np.float32), stop_gradient=False)
    bn = bn_layer(32, rng)
    for training in (True, False):
        bn.train(training)
        with paddle.set_grad_enabled(training):
            onednn.batch_norm(x, bn, relu=True)
    bn.train()
    onednn.batch_norm(x, bn, relu6=True)
    assert calls == []


def test_the_build_leaves_no_files_behind(monkeypatch, tmp_path):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(fused.tempfile, "tempdir", None)  # re-read TMPDIR
    monkeypatch.setattr(fused, "_LIB", None)
    monkeypatch.setattr(fused, "_REASON", None)
    lib = fused.load()
    assert list(tmp_path.iterdir()) == []
    if lib is None:
        pytest.skip(f"the fused kernel did not build here: {fused.reason()}")
    x = paddle.ones([1, 1, 2, 16])
    y, mean, var = fused.forward(lib, x, paddle.ones([16]), paddle.zeros([16]), 1e-5, 0.0, 6.0)
    assert float(mean.sum()) == 16.0 and float(var.sum()) == 0.0 and float(y.abs().sum()) == 0.0


def simam_float64(x: np.ndarray, dy: np.ndarray, e_lambda: float = 1e-4) -> tuple:
    """SimAM's output and input gradient by the module's own NCHW maths, in float64 (autograd)."""
    from models.attention.simam import SimAM

    t = paddle.to_tensor(x.astype(np.float64).transpose(0, 3, 1, 2), stop_gradient=False)
    y = SimAM(e_lambda=e_lambda)(t)
    (y * paddle.to_tensor(dy.astype(np.float64).transpose(0, 3, 1, 2))).sum().backward()
    return y.numpy().transpose(0, 2, 3, 1), t.grad.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("shape, spread", [((4, 1, 2, 16), 1.0), ((3, 5, 7, 32), 1.0), ((2, 16, 16, 64), 1.0),
                                           ((1, 3, 3, 48), 30.0)])
def test_simam_kernel_matches_the_module_in_float64(shape, spread):
    kernel()
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * spread + 0.5).astype(np.float32)
    x[0, 0, 0, :8] += 10 * spread  # positions that stand far out: sigmoid near 1, exp(-z) near 0
    dy = rng.standard_normal(shape).astype(np.float32)
    t = paddle.to_tensor(x, stop_gradient=False)
    y = fused.simam(t, 1e-4)
    (y * paddle.to_tensor(dy)).sum().backward()
    y64, dx64 = simam_float64(x, dy)
    np.testing.assert_allclose(y.numpy(), y64, rtol=1e-6, atol=1e-7 * np.abs(y64).max())
    np.testing.assert_allclose(t.grad.numpy(), dx64, rtol=1e-4, atol=1e-5 * np.abs(dx64).max())


def test_simam_takes_channels_last_maps_through_the_module(monkeypatch):
    """SimAM(x, "NHWC") is the module's NCHW maths on a channels-last map, with the kernel or
    without it; a channels-last TowerNet-SimAM calls it through the module (hooks see it)."""
    from models import create_model
    from models.attention.simam import SimAM

    kernel()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 4, 24)).astype(np.float32)  # 24 channels: not the kernel's
    assert fused.simam(paddle.to_tensor(x), 1e-4) is None
    assert fused.simam(paddle.to_tensor(x[..., :16].astype(np.float64)), 1e-4) is None
    module = SimAM()
    for channels in (24, 32):
        x = rng.standard_normal((2, 4, 4, channels)).astype(np.float32)
        dy = rng.standard_normal(x.shape).astype(np.float32)
        y64, dx64 = simam_float64(x, dy)
        for switch in ("1", "0"):
            monkeypatch.setenv("TOWERNET_FUSED", switch)
            t = paddle.to_tensor(x, stop_gradient=False)
            y = module(t, "NHWC")
            (y * paddle.to_tensor(dy)).sum().backward()
            np.testing.assert_allclose(y.numpy(), y64, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(t.grad.numpy(), dx64, rtol=1e-4, atol=1e-5 * np.abs(dx64).max())
    monkeypatch.setenv("TOWERNET_FUSED", "1")
    calls, seen = [], []
    simam = fused.simam
    monkeypatch.setattr(fused, "simam", lambda x, e: calls.append(x.shape) or simam(x, e))
    net = create_model("towernet_simam", num_classes=3, data_format="NHWC")
    for layer in net.sublayers():
        if isinstance(layer, SimAM):
            layer.register_forward_post_hook(lambda layer, inputs, out: seen.append(inputs[1]))
    net.train()
    net(paddle.to_tensor(rng.standard_normal((2, 3, 64, 64)).astype(np.float32))).sum().backward()
    # at 64 px the first two slots see 4x4 and 2x2 maps of 256 channels; the last two, 1x1, are skipped
    assert calls == [[2, 4, 4, 256], [2, 2, 2, 256]] and seen == ["NHWC", "NHWC"]
