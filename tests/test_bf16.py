"""train.amp=bf16 on a CPU: the oneDNN backend's bfloat16 convolutions, a bf16 run end to end,
and the one-line refusals where the CPU or the backend cannot do it."""
import importlib.util
import sys

import numpy as np
import paddle
import pytest

from app.build.model import amp_configs_for
from app.config.load import load_config, parse_override
from app.run.folder import RunFolder
from app.util.errors import UserError
from backend import _dnnl, onednn
from conftest import run_cli, train_cut_in_epoch_2

HAS_BF16 = bool(onednn.cpu_bf16_flags()) and onednn.available()
needs_bf16 = pytest.mark.skipif(
    not HAS_BF16, reason=f"this CPU has none of {', '.join(onednn.BF16_FLAGS)} (or no oneDNN backend)")

CASES = [  # batch, in, out, kernel, stride, groups, map: the geometries our models use
    (4, 64, 128, 3, 1, 1, 16),  # TowerNet 3x3
    (4, 128, 64, 1, 1, 1, 8),  # 1x1 (Inception reduce, ResNet bottleneck, SE)
    (4, 32, 64, 3, 2, 1, 16),  # stride 2 (ResNet, MobileNetV2)
    (4, 16, 32, 5, 1, 1, 8),  # Inception 5x5
    (4, 32, 32, 3, 2, 32, 16),  # depthwise (MobileNetV2): stays float32
]


def conv_and_grads(x, w, b, dy, bf16, stride, groups):
    onednn.set_bf16_training(bf16)
    try:
        xt, wt, bt = (paddle.to_tensor(a, stop_gradient=False) for a in (x, w, b))
        y = onednn.conv2d(xt, wt, bt, stride, w.shape[-1] // 2, 1, groups)
        (y * paddle.to_tensor(dy)).sum().backward()
        return [t.numpy() for t in (y, xt.grad, wt.grad, bt.grad)]
    finally:
        onednn.set_bf16_training(False)


@needs_bf16
@pytest.mark.parametrize("n,ci,co,k,stride,groups,hw", CASES)
def test_bf16_conv_forward_and_both_backwards_are_float32_within_bfloat16(n, ci, co, k, stride, groups, hw):
    rng = np.random.default_rng(ci + k)
    x = rng.standard_normal((n, ci, hw, hw)).astype("float32")
    w = (rng.standard_normal((co, ci // groups, k, k)) * 0.1).astype("float32")
    b = rng.standard_normal(co).astype("float32")
    out = (hw + 2 * (k // 2) - k) // stride + 1
    dy = rng.standard_normal((n, co, out, out)).astype("float32")
    fp32 = conv_and_grads(x, w, b, dy, False, stride, groups)
    bf16 = conv_and_grads(x, w, b, dy, True, stride, groups)
    for name, a, c in zip(("y", "dx", "dw", "db"), fp32, bf16):
        assert c.dtype == np.float32
        error = np.abs(a - c).max() / np.abs(a).max()
        if groups > 1:
            assert error == 0, name  # depthwise: float32 on purpose (module doc)
        else:
            assert 1e-6 < error <= 1e-2, name  # rounded to bfloat16, and only that much


@needs_bf16
def test_no_grad_passes_stay_float32_while_bf16_training_is_on():
    x = paddle.randn([2, 16, 8, 8])
    w = paddle.randn([16, 16, 3, 3])
    fp32 = onednn.conv2d(x, w, None, 1, 1).numpy()
    onednn.set_bf16_training(True)
    try:
        with paddle.no_grad():
            evaluated = onednn.conv2d(x, w, None, 1, 1).numpy()
        x.stop_gradient = False
        trained = onednn.conv2d(x, w, None, 1, 1).numpy()
    finally:
        onednn.set_bf16_training(False)
    np.testing.assert_array_equal(evaluated, fp32)
    assert not np.array_equal(trained, fp32)


def chain(x, w1, w2, bn1, bn2, bf16):
    """conv -> BN+ReLU -> max-pool -> conv -> BN+ReLU -> concat with itself, channels-last, as
    TowerNet chains them; float32 at the end. Returns the output and every gradient."""
    onednn.set_bf16_training(bf16)
    try:
        xt, w1t, w2t = (paddle.to_tensor(a, stop_gradient=False) for a in (x, w1, w2))
        h = onednn.batch_norm(onednn.conv2d(xt, w1t, None, 1, 1, data_format="NHWC", bf16_out=True), bn1, relu=True)
        inner = [h.dtype]
        h = onednn.max_pool2d(h, 3, 2, 1, data_format="NHWC")
        h = onednn.batch_norm(onednn.conv2d(h, w2t, None, 1, 1, data_format="NHWC", bf16_out=True), bn2, relu=True)
        inner.append(h.dtype)
        y = onednn.to_float32(onednn.concat([h, h], axis=3))
        (y * paddle.to_tensor(np.linspace(-1, 1, y.size, dtype="float32").reshape(y.shape))).sum().backward()
        grads = [t.grad.numpy() for t in (xt, w1t, w2t, bn1.weight, bn1.bias, bn2.weight, bn2.bias)]
        for bn in (bn1, bn2):
            bn.clear_gradients()
        return y, inner, grads
    finally:
        onednn.set_bf16_training(False)


@needs_bf16
def test_bf16_chain_keeps_maps_bfloat16_between_backend_ops_and_matches_float32():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16, 16, 32)).astype("float32")  # NHWC
    w1 = (rng.standard_normal((64, 32, 3, 3)) * 0.1).astype("float32")
    w2 = (rng.standard_normal((32, 64, 3, 3)) * 0.1).astype("float32")
    bns = [paddle.nn.BatchNorm2D(c, data_format="NHWC") for c in (64, 32)]
    y32, inner32, g32 = chain(x, w1, w2, *bns, bf16=False)
    stats32 = [b._mean.numpy().copy() for b in bns]
    y16, inner16, g16 = chain(x, w1, w2, *bns, bf16=True)
    assert inner32 == [paddle.float32] * 2 and inner16 == [paddle.bfloat16] * 2
    assert y16.dtype == paddle.float32 and all(g.dtype == np.float32 for g in g16)
    error = np.abs(y16.numpy() - y32.numpy()).max() / np.abs(y32.numpy()).max()
    assert 1e-6 < error < 3e-2
    for name, a, c in zip(("dx", "dw1", "dw2", "dscale1", "dshift1", "dscale2", "dshift2"), g32, g16):
        cosine = (a.ravel() @ c.ravel()) / np.linalg.norm(a) / np.linalg.norm(c)
        assert cosine > 0.995, name  # 0.9976-0.9998 here, as with float32 maps between the convs
    # the running statistics moved by the batch statistics (float32) both times
    assert all(np.abs(b._mean.numpy() - s).max() > 0 for b, s in zip(bns, stats32))


@needs_bf16
def test_bf16_chain_ends_in_float32_wherever_an_op_outside_the_backend_follows():
    a = paddle.randn([2, 4, 4, 16]).astype("bfloat16")
    b = paddle.randn([2, 4, 4, 16])
    assert onednn.add_relu(a, b).dtype == paddle.float32  # mixed: added in float32
    assert onednn.add_relu(a, a).dtype == paddle.bfloat16
    assert onednn.concat([a, b], axis=3).dtype == paddle.float32
    bn = paddle.nn.BatchNorm2D(16, data_format="NHWC", use_global_stats=True)  # a frozen BN
    assert onednn.batch_norm(a, bn, relu=True).dtype == paddle.float32
    relu6 = paddle.nn.BatchNorm2D(16, data_format="NHWC")  # BN + ReLU6 has no bfloat16 kernel
    assert onednn.batch_norm(a, relu6, relu6=True).dtype == paddle.float32
    from models.attention import attend, create_attention
    assert attend(create_attention("simam", 16), a, "NHWC").dtype == paddle.float32
    # no bf16 training: a chained conv writes float32
    w = paddle.randn([16, 16, 3, 3])
    assert onednn.conv2d(b, w, None, 1, 1, data_format="NHWC", bf16_out=True).dtype == paddle.float32


def bf16_rounded(a):
    return paddle.to_tensor(a).astype("bfloat16").astype("float32").numpy().astype("float64")


@needs_bf16
@pytest.mark.parametrize("k,stride,hw,x_bf16", [(1, 1, 8, True), (1, 1, 8, False), (1, 2, 8, True), (3, 1, 8, True),
                                                (3, 2, 8, True), (3, 2, 8, False), (5, 2, 10, True), (3, 2, 7, True),
                                                (1, 2, 64, True)])
def test_bf16_channels_last_weight_gradient_is_the_bfloat16_product_summed_in_float32(k, stride, hw, x_bf16):
    """Whichever kernel computes it (oneDNN's convolution, or its matmul for 1x1 stride-1
    convolutions and strided ones on small maps where the CPU has no brgemm backward-weights
    kernel: the input gathered tap by tap, padding included), a bf16 weight gradient is the
    exact product of the bfloat16-rounded input and upstream gradient, summed in float32."""
    rng = np.random.default_rng(k + stride + hw)
    n, ci, co = 4, 96, 64
    x = rng.standard_normal((n, hw, hw, ci)).astype("float32")  # NHWC
    w = (rng.standard_normal((co, ci, k, k)) * 0.1).astype("float32")
    onednn.set_bf16_training(True)
    try:
        xt = paddle.to_tensor(x).astype("bfloat16") if x_bf16 else paddle.to_tensor(x)
        xt.stop_gradient = False
        wt = paddle.to_tensor(w, stop_gradient=False)
        y = onednn.conv2d(xt, wt, None, stride, k // 2, data_format="NHWC", bf16_out=True)
        dy = paddle.to_tensor(rng.standard_normal(y.shape).astype("float32")).astype("bfloat16")
        (y.astype("float32") * dy.astype("float32")).sum().backward()
    finally:
        onednn.set_bf16_training(False)
    assert y.dtype == paddle.bfloat16 and wt.grad.dtype == paddle.float32
    if "amx_bf16" not in onednn.cpu_bf16_flags():  # no brgemm backward-weights: which path ran
        plan = next(p for key, p in onednn._PLANS.items() if key[0] == (n, ci, hw, hw) and key[1] == (co, ci, k, k)
                    and key[3] == (stride, stride) and key[7])
        out_pixels = n * y.shape[1] * y.shape[2]
        on_matmul = out_pixels <= (_dnnl.MATMUL_PIXELS if (k, stride) == (1, 1) else _dnnl.GATHER_PIXELS)
        on_matmul = on_matmul and (k == 1 or stride > 1) and hw != 7  # 7: a window oneDNN won't describe
        assert (plan.weights_matmul is not None) == on_matmul
    xs, dys = bf16_rounded(x), dy.astype("float32").numpy().astype("float64")
    pad = np.pad(xs, ((0, 0), (k // 2,) * 2, (k // 2,) * 2, (0, 0)))
    out = y.shape[1]
    expected = np.empty((co, ci, k, k))
    for i in range(k):
        for j in range(k):
            window = pad[:, i:i + stride * out:stride, j:j + stride * out:stride, :]
            expected[:, :, i, j] = np.einsum("nhwo,nhwc->oc", dys, window)
    error = np.abs(wt.grad.numpy() - expected).max() / np.abs(expected).max()
    assert error < 1e-5  # float32 sums (~1e-7 here); a bfloat16-rounded sum would be ~1e-3


@needs_bf16
def test_weights_gather_switch_puts_strided_weight_gradients_back_on_the_kernel(monkeypatch):
    if "amx_bf16" in onednn.cpu_bf16_flags():
        pytest.skip("brgemm backward-weights here: no gathered path to switch")
    rng = np.random.default_rng(3)
    x = paddle.to_tensor(rng.standard_normal((2, 8, 8, 32)).astype("float32")).astype("bfloat16")
    w = paddle.to_tensor((rng.standard_normal((32, 32, 3, 3)) * 0.1).astype("float32"), stop_gradient=False)
    calls = []
    real = _dnnl._WeightGradientMatmul.__call__
    monkeypatch.setattr(_dnnl._WeightGradientMatmul, "__call__", lambda self, *a: calls.append(1) or real(self, *a))
    grads = []
    onednn.set_bf16_training(True)
    try:
        for switch in ("1", "0"):
            monkeypatch.setenv("TOWERNET_WEIGHTS_GATHER", switch)
            w.clear_gradient()
            onednn.conv2d(x, w, None, 2, 1, data_format="NHWC", bf16_out=True).astype("float32").sum().backward()
            grads.append(w.grad.numpy().copy())
    finally:
        onednn.set_bf16_training(False)
    assert len(calls) == 1  # the gathered matmul with the switch on, the kernel with it off
    assert np.abs(grads[0] - grads[1]).max() <= 1e-5 * np.abs(grads[1]).max()  # sums in another order


@needs_bf16
@pytest.mark.parametrize("name", ["towernet_simam", "towernet", "resnet50"])
def test_bf16_chains_run_inside_the_models_and_every_gradient_is_float32(name):
    from models import create_model
    paddle.seed(0)
    model = create_model(name, num_classes=4, data_format="NHWC")
    seen = []
    convs = [m for m in model.sublayers() if getattr(m, "bf16_chain", False)]
    assert convs
    hooks = [m.register_forward_post_hook(lambda layer, inputs, out: seen.append(out.dtype)) for m in convs]
    x, label = paddle.randn([2, 3, 64, 64]), paddle.to_tensor([[1], [3]])
    onednn.set_bf16_training(True)
    try:
        loss = paddle.nn.functional.cross_entropy(model(x), label)
        loss.backward()
    finally:
        onednn.set_bf16_training(False)
    assert seen.count(paddle.bfloat16) == len(convs) and np.isfinite(float(loss))  # the RGB stem too
    assert all(p.grad is not None and p.grad.dtype == paddle.float32 and np.isfinite(p.grad.numpy()).all()
               for p in model.parameters() if not p.stop_gradient)
    seen.clear()
    model.eval()
    with paddle.no_grad():
        assert model(x).dtype == paddle.float32
    assert set(seen) == {paddle.float32}  # evaluation stays float32
    for h in hooks:
        h.remove()


def small_run(root, out, amp, epochs=4, **extra):
    return load_config(model="towernet_simam", overrides=[
        ("data.root", str(root)), ("output.dir", str(out)), ("train.epochs", epochs),
        ("data.image_size", 32), ("train.batch_size", 12), ("data.cache", False),
        ("train.amp", amp), *extra.items()])


@needs_bf16
def test_bf16_run_learns_like_fp32_keeps_float32_weights_and_is_labelled(tiny_split, tmp_path):
    import json

    import yaml

    from app.run.folder import RunFolder
    from app.study.runs import run_label
    from app.train import trainer

    # 6 epochs of 3 steps: after 4 the losses of two precisions still cross each other by
    # chance (seed 0 channels-last: bf16 1.33 vs fp32 0.82 at epoch 4, 0.65 vs 0.62 at 6).
    runs = {amp: trainer.train(small_run(tiny_split, tmp_path / amp, amp, epochs=6)) for amp in ("off", "bf16")}
    losses = {amp: [r["train_loss"] for r in RunFolder(run).read_metrics()] for amp, run in runs.items()}
    assert losses["bf16"][-1] < 0.7 * losses["bf16"][0]
    assert losses["bf16"][-1] == pytest.approx(losses["off"][-1], rel=0.25)
    assert losses["bf16"] != losses["off"]  # it did run in another precision
    weights = paddle.load(str(runs["bf16"] / "best.pdparams"))
    assert {str(t.dtype) for t in weights.values()} <= {"paddle.float32", "paddle.int64"}
    cfg = yaml.safe_load((runs["bf16"] / "config.yaml").read_text())
    assert cfg["train"]["amp"] == "bf16" and run_label(cfg) == "towernet_simam bf16"
    assert json.loads((runs["bf16"] / "best.json").read_text())["amp"] == "bf16"
    proc = run_cli("eval.py", "--run", runs["bf16"], "--out", tmp_path / "eval", check=True)
    assert "top-1" in proc.stdout  # evaluated (in float32: no gradients, test above)
    assert onednn._BF16_TRAINING is False  # for that run only: a study's next run is fp32


@needs_bf16
def test_interrupted_bf16_run_resumes_exactly(tiny_split, tmp_path):
    from app.train import trainer

    full = trainer.train(small_run(tiny_split, tmp_path / "full", "bf16", epochs=3))
    run = tmp_path / "cut" / "towernet_simam"
    train_cut_in_epoch_2(small_run(tiny_split, tmp_path / "cut", "bf16", epochs=3), run)
    trainer.train(RunFolder(run).read_config(), run)
    a, b = paddle.load(str(full / "last.pdparams")), paddle.load(str(run / "last.pdparams"))
    for k in a:
        np.testing.assert_allclose(b[k].numpy(), a[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


def test_bf16_on_a_cpu_without_bfloat16_is_one_line(monkeypatch):
    monkeypatch.setattr(paddle, "get_device", lambda: "cpu")
    monkeypatch.setattr(onednn, "cpu_bf16_flags", lambda: [])
    with pytest.raises(UserError, match=r"does not multiply bfloat16 \(no amx_bf16 or avx512_bf16"):
        amp_configs_for("bf16")
    assert onednn._BF16_TRAINING is False


def test_bf16_without_the_onednn_backend_is_one_line(monkeypatch):
    monkeypatch.setattr(paddle, "get_device", lambda: "cpu")
    monkeypatch.setattr(onednn, "cpu_bf16_flags", lambda: ["avx512_bf16"])
    monkeypatch.setenv("TOWERNET_ONEDNN", "0")
    with pytest.raises(UserError, match="TOWERNET_ONEDNN=0"):
        amp_configs_for("bf16")


def test_cpu_bf16_turns_the_backend_on_and_off_hands_hapi_nothing(monkeypatch):
    if not onednn.available():
        pytest.skip("no oneDNN backend in this Paddle build")
    monkeypatch.setattr(paddle, "get_device", lambda: "cpu")
    monkeypatch.setattr(onednn, "cpu_bf16_flags", lambda: ["avx512_bf16"])  # faked capability
    try:
        assert amp_configs_for("bf16") is None and onednn._BF16_TRAINING is True
        assert amp_configs_for("off") is None and onednn._BF16_TRAINING is False
    finally:
        onednn.set_bf16_training(False)


def test_yaml_1_1_words_stay_words_in_overrides():
    assert parse_override("train.amp=off") == ("train.amp", "off")
    assert parse_override("data.cache=false") == ("data.cache", False)
    assert parse_override("data.cache=True") == ("data.cache", True)
    assert load_config(model="towernet", overrides=[parse_override("train.amp=off")])["train"]["amp"] == "off"


@needs_bf16
def test_bf16_chains_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("TOWERNET_BF16_CHAINS", "0")
    x, w = paddle.randn([2, 8, 8, 16]), paddle.randn([16, 16, 3, 3])
    x.stop_gradient = False
    onednn.set_bf16_training(True)
    try:
        y = onednn.conv2d(x, w, None, 1, 1, data_format="NHWC", bf16_out=True)
    finally:
        onednn.set_bf16_training(False)
    assert y.dtype == paddle.float32


@needs_bf16
def test_bf16_gradient_audit_measures_against_float64_and_names_a_layer_that_strays(tiny_run, monkeypatch, capsys):
    from bench import bf16_gradients as audit
    run = tiny_run[0] / "towernet_simam"
    assert audit.main(["--run", str(run), "--batch-size", "6"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("parameters"))
    assert header.split()[2:] == ["ours", "float32", "ours", "bf16", "rounding", "only", "ratio"]
    fp32, bf16, rounding, ratio = map(float, next(
        line.split() for line in out.splitlines() if line.startswith("all "))[2:6])
    assert fp32 < 0.01 < rounding and fp32 < bf16  # float32 is near exact; bfloat16 is not
    assert ratio == pytest.approx(bf16 / rounding, abs=0.01)
    along = dict(part.rsplit(" ", 1) for part in out.split("direction): ")[1].splitlines()[0].split(", "))
    assert float(along["ours float32"]) == pytest.approx(1, abs=0.01)

    honest = audit.gradients  # a kernel that got one layer's bf16 weight gradient 3x too large
    def faulty(network, x, y, bf16=False):
        loss, grads = honest(network, x, y, bf16=bf16)
        if bf16:
            grads["inc2.p2.1.0.weight"] = grads["inc2.p2.1.0.weight"] * 3
        return loss, grads
    monkeypatch.setattr(audit, "gradients", faulty)
    assert audit.main(["--run", str(run), "--batch-size", "6"]) == 0
    top = capsys.readouterr().out.split("furthest beyond rounding")[1].split(": ", 1)[1]
    assert top.startswith("inc2.p2.1.0.weight +")


@needs_bf16
def test_bf16_gradient_audit_refuses_what_it_cannot_measure(tmp_path):
    proc = run_cli("bench/bf16_gradients.py", "--run", tmp_path / "nope")
    assert proc.returncode == 2 and "run folder not found" in proc.stderr
    proc = run_cli("bench/bf16_gradients.py", "--model", "towernet", "--batch-size", "1")
    assert proc.returncode == 2 and "--batch-size" in proc.stderr
    if importlib.util.find_spec("torch") is None:  # an interpreter without torch
        proc = run_cli("bench/bf16_gradients.py", "--model", "towernet", "--batch-size", "2",
                       "--image-size", "32", "--torch-python", sys.executable)
        assert proc.returncode == 2 and "the PyTorch step failed (ModuleNotFoundError" in proc.stderr


@needs_bf16
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_bf16_gradient_audit_gives_pytorch_the_same_weights_and_batch(tiny_run, capsys):
    from bench import bf16_gradients as audit
    run = tiny_run[0] / "towernet_simam"
    assert audit.main(["--run", str(run), "--batch-size", "6", "--torch-python", sys.executable]) == 0
    out = capsys.readouterr().out
    losses = dict(part.rsplit(" ", 1) for part in out.splitlines()[0].split("; loss ")[1].split(", "))
    assert float(losses["PyTorch float32"]) == pytest.approx(float(losses["float64"]), rel=1e-4)
    assert float(out.split("PyTorch's float64 gradients against ours: median distance ")[1].split()[0]) < 1e-8
    fp32, _, _, torch32, _, _ = map(float, next(
        line.split() for line in out.splitlines() if line.startswith("all "))[2:8])
    assert torch32 < 0.01 and fp32 < 0.01  # one network in both frameworks
