"""backend.onednn: convolutions on the oneDNN inside the Paddle wheel compute what F.conv2d does."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddle import nn

from backend import onednn
from models import create_model

pytestmark = pytest.mark.skipif(not onednn.available(), reason="this Paddle build has no usable libdnnl")

CASES = [  # batch, in, out, kernel, stride, padding, dilation, groups, bias, map
    (3, 3, 16, 3, 2, 1, 1, 1, False, 17),  # RGB stem: plain layout
    (3, 16, 32, 3, 1, 1, 1, 1, False, 9),
    (2, 32, 8, 1, 1, 0, 1, 1, True, 5),  # 1x1 with bias (VGG, SE)
    (2, 8, 16, 5, 1, 2, 1, 1, False, 4),  # Inception 5x5
    (4, 64, 64, 3, 1, 1, 1, 1, False, 1),  # 1x1 map
    (2, 16, 16, 3, 2, 1, 1, 16, False, 9),  # depthwise, stride 2 (MobileNetV2)
    (2, 16, 32, 3, 1, 2, 2, 4, True, 7),  # grouped, dilated
    (2, 3, 8, 7, (2, 1), (3, 1), 1, 1, True, 10),  # 7x7 stem, uneven stride and padding
]


def conv_and_grads(x, w, b, dy, fn, **geometry):
    xt = paddle.to_tensor(x, stop_gradient=False)
    wt = paddle.to_tensor(w, stop_gradient=False)
    bt = None if b is None else paddle.to_tensor(b, stop_gradient=False)
    y = fn(xt, wt, bt, **geometry)
    (y * paddle.to_tensor(dy)).sum().backward()
    return [t.numpy() for t in (y, xt.grad, wt.grad) + (() if b is None else (bt.grad,))]


def conv_case(seed, n, ci, co, k, stride, padding, dilation, groups, bias, hw):
    """(x, w, b, dy, geometry) in float64 for one CASES row."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, ci, hw, hw))
    w = rng.standard_normal((co, ci // groups, k, k)) * 0.1
    b = rng.standard_normal(co) if bias else None
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    dy = rng.standard_normal(F.conv2d(paddle.to_tensor(x), paddle.to_tensor(w), None, **geometry).shape)
    return x, w, b, dy, geometry


def float32(*arrays):
    return [None if a is None else a.astype(np.float32) for a in arrays]


@pytest.mark.parametrize("n,ci,co,k,stride,padding,dilation,groups,bias,hw", CASES)
def test_forward_and_all_gradients_match_float64(n, ci, co, k, stride, padding, dilation, groups, bias, hw):
    x, w, b, dy, geometry = conv_case(ci * 100 + k, n, ci, co, k, stride, padding, dilation, groups, bias, hw)
    expected = conv_and_grads(x, w, b, dy, F.conv2d, **geometry)
    got = conv_and_grads(*float32(x, w, b, dy), onednn.conv2d, **geometry)
    assert len(got) == len(expected)
    for name, a, b in zip(("y", "dx", "dw", "db"), got, expected):
        assert a.shape == b.shape, name
        assert a.dtype == np.float32, name
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max(), name


@pytest.mark.parametrize("k,stride,padding,hw", [(3, 2, 1, 9), (3, 1, 1, 5), (2, 2, 0, 8), (3, 2, 1, 1)])
def test_max_pool_matches_paddle(k, stride, padding, hw):
    rng = np.random.default_rng(k + hw)
    x = rng.standard_normal((3, 16, hw, hw)).astype(np.float32)
    xa = paddle.to_tensor(x, stop_gradient=False)
    xb = paddle.to_tensor(x, stop_gradient=False)
    ya, yb = onednn.max_pool2d(xa, k, stride, padding), F.max_pool2d(xb, k, stride, padding)
    dy = paddle.to_tensor(rng.integers(-3, 4, yb.shape).astype(np.float32))
    (ya * dy).sum().backward()
    (yb * dy).sum().backward()
    np.testing.assert_array_equal(ya.numpy(), yb.numpy())
    np.testing.assert_array_equal(xa.grad.numpy(), xb.grad.numpy())


def test_input_without_gradient_gets_weight_gradient_only():
    rng = np.random.default_rng(1)
    x = paddle.to_tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    w = paddle.to_tensor(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), stop_gradient=False)
    onednn.conv2d(x, w, None, 1, 1).sum().backward()
    w_ref = paddle.to_tensor(w.numpy(), stop_gradient=False)
    F.conv2d(x, w_ref, padding=1).sum().backward()
    assert x.grad is None
    np.testing.assert_allclose(w.grad.numpy(), w_ref.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_frozen_weights_and_bias_get_no_gradient():
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3, padding=1), paddle.nn.ReLU(),
                               paddle.nn.Conv2D(4, 2, 3, padding=1))
    reference = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3, padding=1), paddle.nn.ReLU(),
                                     paddle.nn.Conv2D(4, 2, 3, padding=1))
    reference.set_state_dict(net.state_dict())
    onednn.convert(net)
    for model in (net, reference):
        model[0].weight.stop_gradient = True  # frozen weight, trainable bias
        model[2].bias.stop_gradient = True  # trainable weight, frozen bias
    x = paddle.randn([2, 3, 8, 8])
    net(x).sum().backward()
    reference(x).sum().backward()
    assert net[0].weight.grad is None and net[2].bias.grad is None
    for name in ("0.bias", "2.weight"):
        got, want = dict(net.named_parameters())[name].grad, dict(reference.named_parameters())[name].grad
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


def test_switched_off_by_environment_is_exactly_f_conv2d(monkeypatch):
    monkeypatch.setenv("TOWERNET_ONEDNN", "0")
    assert not onednn.available()
    x = paddle.randn([2, 8, 6, 6])
    w = paddle.randn([4, 8, 3, 3])
    np.testing.assert_array_equal(onednn.conv2d(x, w, None, 1, 1).numpy(), F.conv2d(x, w, padding=1).numpy())


def test_towernet_trains_through_onednn_and_matches_paddle_conv(monkeypatch):
    paddle.seed(0)
    net = create_model("towernet_simam", num_classes=5)
    net.eval()  # BatchNorm on running stats: logits depend smoothly on the conv results
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32))
    onednn._PLANS.clear()
    fast = net(x).numpy()
    kinds = {type(plan).__name__ for plan in onednn._PLANS.values()}
    assert kinds == {"ConvPlan", "MaxPoolPlan", "AddPlan"}  # the oneDNN path ran (AddPlan: fork's sums)
    monkeypatch.setenv("TOWERNET_ONEDNN", "0")
    slow = net(x).numpy()
    assert np.abs(fast - slow).max() <= 1e-4 * max(1.0, np.abs(slow).max())

    net.train()
    monkeypatch.delenv("TOWERNET_ONEDNN")
    loss = F.cross_entropy(net(x), paddle.to_tensor([[0], [1], [2]]))
    loss.backward()
    convs = [p for name, p in net.named_parameters() if name.endswith(".0.weight")]
    assert convs and all(p.grad is not None and np.isfinite(p.grad.numpy()).all() for p in convs)


def test_a_paddle_without_usable_libdnnl_falls_back_to_paddle(monkeypatch):
    def missing(path):
        raise OSError(f"{path}: cannot open shared object file")

    monkeypatch.setattr(onednn, "_Dnnl", missing)
    monkeypatch.setattr(onednn, "_DNNL", None)
    monkeypatch.setattr(onednn, "_LOAD_ERROR", None)
    assert not onednn.available() and "cannot open" in onednn._LOAD_ERROR
    x, w = paddle.randn([2, 8, 6, 6]), paddle.randn([4, 8, 3, 3])
    np.testing.assert_array_equal(onednn.conv2d(x, w, None, 1, 1).numpy(), F.conv2d(x, w, padding=1).numpy())
    np.testing.assert_array_equal(onednn.max_pool2d(x, 3, 2, 1).numpy(), F.max_pool2d(x, 3, 2, 1).numpy())


def test_a_geometry_onednn_refuses_falls_back_to_paddle(monkeypatch):
    def refuse(*args):
        raise RuntimeError("oneDNN call failed with status 3")

    monkeypatch.setattr(onednn, "_ConvPlan", refuse)
    monkeypatch.setattr(onednn, "_PLANS", {})
    x, w = paddle.randn([2, 8, 6, 6]), paddle.randn([4, 8, 3, 3])
    np.testing.assert_array_equal(onednn.conv2d(x, w, None, 1, 1).numpy(), F.conv2d(x, w, padding=1).numpy())
    assert list(onednn._PLANS.values()) == [None]


def test_convert_swaps_plain_convs_in_place_and_keeps_the_state_dict():
    net = paddle.nn.Sequential(
        paddle.nn.Conv2D(3, 8, 3, padding=1),
        paddle.nn.Conv2D(8, 8, 3, padding="SAME"),  # string padding: left to Paddle
        paddle.nn.Conv2D(8, 8, 3, padding=1, padding_mode="reflect"),  # not zero padding: left
        paddle.nn.Conv2D(8, 8, 3, padding=1, data_format="NHWC"),  # channels-last: converted
        paddle.nn.MaxPool2D(3, 2, 1),
        paddle.nn.MaxPool2D(3, 2, 1, ceil_mode=True),  # ceil mode: left
    )
    keys, weights = list(net.state_dict()), [p for p in net.parameters()]
    first = net[0]
    onednn.convert(net)
    assert net[0] is first and type(net[0]) is onednn.Conv2D
    assert [type(layer) for layer in net[1:3]] == [paddle.nn.Conv2D] * 2 and type(net[3]) is onednn.Conv2D
    assert type(net[4]) is onednn.MaxPool2D and type(net[5]) is paddle.nn.MaxPool2D
    assert list(net.state_dict()) == keys and all(a is b for a, b in zip(net.parameters(), weights))


def test_every_registered_model_has_its_convs_and_pools_converted():
    from models import list_models
    for name in list_models():
        layers = create_model(name, num_classes=4).sublayers()
        convs = [m for m in layers if isinstance(m, paddle.nn.Conv2D)]
        pools = [m for m in layers if isinstance(m, paddle.nn.MaxPool2D)]
        assert convs and all(type(m) is onednn.Conv2D for m in convs), name
        assert all(type(m) is onednn.MaxPool2D for m in pools), name


def nhwc(fn):
    """``fn`` (NCHW in and out) run on channels-last copies: NHWC in, NHWC out, NCHW returned."""
    def run(x, *args, **kwargs):
        y = fn(x.transpose([0, 2, 3, 1]), *args, data_format="NHWC", **kwargs)
        return y.transpose([0, 3, 1, 2])
    return run


@pytest.mark.parametrize("n,ci,co,k,stride,padding,dilation,groups,bias,hw", CASES[:6])
def test_channels_last_conv_matches_float64(n, ci, co, k, stride, padding, dilation, groups, bias, hw):
    x, w, b, dy, geometry = conv_case(ci * 10 + k, n, ci, co, k, stride, padding, dilation, groups, bias, hw)
    exact = conv_and_grads(x, w, b, dy, F.conv2d, **geometry)
    ours = conv_and_grads(*float32(x, w, b, dy), nhwc(onednn.conv2d), **geometry)
    for got, want in zip(ours, exact):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    nhwc_key = [key for key in onednn._PLANS if key[-1] is True and key[1] == w.shape]
    assert nhwc_key and onednn._PLANS[nhwc_key[0]] is not None  # oneDNN ran it, no fallback


def test_channels_last_max_pool_equals_paddle_exactly():
    x = np.random.default_rng(0).standard_normal((2, 9, 9, 16)).astype(np.float32)
    x[:, 1, 1:3, :] = 5.0  # ties
    results = []
    for fn in (onednn.max_pool2d, F.max_pool2d):
        xt = paddle.to_tensor(x, stop_gradient=False)
        y = fn(xt, 3, 2, 1, data_format="NHWC")
        (y * y).sum().backward()
        results.append((y.numpy(), xt.grad.numpy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


@pytest.mark.parametrize("relu", [True, False])
def test_channels_last_batch_norm_matches_paddle_in_training_and_eval(relu):
    rng = np.random.default_rng(int(relu))
    x = (rng.standard_normal((4, 5, 6, 8)) * 2 + 1).astype(np.float32)
    dy = paddle.to_tensor(rng.standard_normal(x.shape).astype(np.float32))
    layers = [paddle.nn.BatchNorm2D(8, epsilon=1e-3, data_format="NHWC") for _ in range(2)]
    for bn in layers:
        bn.weight.set_value(rng.standard_normal(8).astype(np.float32) if bn is layers[0] else layers[0].weight)
        bn.bias.set_value(np.linspace(-1, 1, 8).astype(np.float32))
    ours, paddles = [], []
    for bn, out, fn in ((layers[0], ours, lambda t, bn: onednn.batch_norm(t, bn, relu)),
                        (layers[1], paddles, lambda t, bn: F.relu(bn(t)) if relu else bn(t))):
        for step in range(2):  # the running statistics move twice
            xt = paddle.to_tensor(x + step, stop_gradient=False)
            y = fn(xt, bn)
            (y * dy).sum().backward()
        out += [y.numpy(), xt.grad.numpy(), bn.weight.grad.numpy(), bn.bias.grad.numpy(),
                bn._mean.numpy(), bn._variance.numpy()]
        bn.eval()
        with paddle.no_grad():
            out.append(fn(paddle.to_tensor(x), bn).numpy())
    assert any(key[0] == "bnorm" and onednn._PLANS[key] is not None for key in onednn._PLANS)
    for got, want in zip(ours, paddles):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * (np.abs(want).max() + 1))


def test_channels_last_batch_norm_with_frozen_statistics_and_gradients_is_paddles():
    """use_global_stats (a frozen backbone) or eval with gradients (Grad-CAM): Paddle's BN."""
    bn = paddle.nn.BatchNorm2D(8, data_format="NHWC")
    bn._mean.set_value(np.full(8, 0.5, np.float32))
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 3, 3, 8)).astype(np.float32),
                         stop_gradient=False)
    for setup in (lambda: setattr(bn, "_use_global_stats", True), lambda: bn.eval()):
        setup()
        y = onednn.batch_norm(x, bn, relu=True)
        np.testing.assert_allclose(y.numpy(), F.relu(bn(x)).numpy(), rtol=1e-6, atol=1e-6)
        y.sum().backward()
        assert x.grad is not None
        x.clear_gradient()


def test_channels_last_models_compute_what_the_nchw_ones_do():
    from models import channels_last_capable, list_models, nchw_twin

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 64, 64)).astype(np.float32)
    label = paddle.to_tensor(np.array([[0], [1], [2], [3]]))
    names = [n for n in list_models() if channels_last_capable(n)]
    assert {"towernet", "towernet_simam", "towernet_se"} <= set(names)
    assert {"resnet50", "resnet50_simam", "mobilenet_v2", "mobilenet_v2_ca"} <= set(names)
    assert "vgg19" not in names  # its classifier reads the flattened 7x7 map in NCHW order
    for name in ("towernet", "towernet_simam", "towernet_se", "towernet_cbam", "resnet50_se",
                 "resnet50_simam", "mobilenet_v2", "mobilenet_v2_ca"):
        paddle.seed(1)
        plain = create_model(name, num_classes=5)
        fast = create_model(name, num_classes=5, data_format="NHWC")
        assert list(fast.state_dict()) == list(plain.state_dict())
        fast.set_state_dict(plain.state_dict())
        results = []
        for net in (plain, fast):
            net.train()
            paddle.seed(2)  # the same dropout masks (MobileNetV2's classifier)
            loss = F.cross_entropy(net(paddle.to_tensor(x)), label)
            loss.backward()
            grads = {k: p.grad.numpy() for k, p in net.named_parameters() if p.grad is not None}
            net.eval()
            with paddle.no_grad():
                logits = net(paddle.to_tensor(x)).numpy()
            results.append((float(loss), grads, logits, {k: v.numpy() for k, v in net.state_dict().items()}))
        (l0, g0, e0, s0), (l1, g1, e1, s1) = results
        assert l1 == pytest.approx(l0, rel=1e-4), name
        np.testing.assert_allclose(e1, e0, rtol=1e-3, atol=1e-4)
        for k in s0:  # running statistics moved the same way
            np.testing.assert_allclose(s1[k], s0[k], rtol=1e-4, atol=1e-5)
        assert g1.keys() == g0.keys()
        flat0, flat1 = (np.concatenate([g[k].ravel() for k in sorted(g0)]) for g in (g0, g1))
        # ResNet-50 at 64 px, batch 4: BN over 16 values in layer4 makes single gradients
        # ill-conditioned (either layout is up to 15% off float64 in some layer); the whole
        # gradient is 1-3% off float64 in both. A layout bug would be off by ~100%.
        assert np.linalg.norm(flat1 - flat0) < 0.05 * np.linalg.norm(flat0), name
        if name.startswith("towernet"):
            for k in g0:
                if ".0.weight" in k or k.startswith("fc."):  # every conv and the classifier
                    np.testing.assert_allclose(g1[k], g0[k], rtol=1e-2, atol=1e-3 * np.abs(g0[k]).max(),
                                               err_msg=f"{name} {k}")
        twin = nchw_twin(fast)
        assert twin.data_format == "NCHW" and not twin.training
        with paddle.no_grad():
            np.testing.assert_allclose(twin(paddle.to_tensor(x)).numpy(), e1, rtol=1e-3, atol=1e-4)


def test_resnet_stem_runs_bn_and_relu_as_one_op_in_channels_last(monkeypatch):
    """ResNet's stem conv -> BN -> ReLU -> pool: channels-last, the BN applies the ReLU (no
    separate activation runs) and the conv may write a bfloat16 chain; NCHW keeps Paddle's."""
    fast = create_model("resnet50_se", num_classes=3, data_format="NHWC")
    plain = create_model("resnet50_se", num_classes=3)
    assert (type(fast.bn1), type(fast.relu)) == (onednn.BatchNormReLU, onednn.AppliedBefore)
    assert (type(plain.bn1), type(plain.relu)) == (nn.BatchNorm2D, nn.ReLU)
    assert fast.conv1.bf16_chain and not getattr(plain.conv1, "bf16_chain", False)
    assert list(fast.state_dict()) == list(plain.state_dict())
    calls = []
    relu = F.relu
    monkeypatch.setattr(onednn.F, "relu", lambda x, *a, **k: calls.append(x.shape) or relu(x, *a, **k))
    fast.train()
    fast(paddle.randn([2, 3, 64, 64]))
    assert [2, 32, 32, 64] not in calls  # the stem's map (SE's own small ReLUs may run)


def test_channels_last_setting_resolves_per_model_and_device(monkeypatch):
    from app.build.network import use_channels_last
    from app.util.errors import UserError

    assert use_channels_last("auto", "towernet_simam", "cpu") is True
    assert use_channels_last("auto", "resnet50", "cpu") is True
    assert use_channels_last("auto", "vgg19", "cpu") is False  # no NHWC layout
    assert use_channels_last("auto", "towernet_simam", "gpu") is False
    assert use_channels_last("off", "towernet_simam", "cpu") is False
    assert use_channels_last("on", "towernet", "gpu") is True
    with pytest.raises(UserError, match="no channels-last layout"):
        use_channels_last("on", "vgg19", "cpu")
    with pytest.raises(ValueError, match="data_format"):
        create_model("vgg19", data_format="NHWC")
    monkeypatch.setenv("TOWERNET_ONEDNN", "0")  # Paddle's kernels: NCHW is their fast layout
    assert use_channels_last("auto", "towernet_simam", "cpu") is False


def test_every_channels_last_model_evaluates_like_its_nchw_twin():
    from models import channels_last_capable, list_models, nchw_twin

    x = paddle.to_tensor(np.random.default_rng(3).standard_normal((2, 3, 64, 64)).astype(np.float32))
    for name in [n for n in list_models() if channels_last_capable(n)]:
        fast = create_model(name, num_classes=3, data_format="NHWC")
        fast.eval()
        with paddle.no_grad():
            got, want = fast(x).numpy(), nchw_twin(fast)(x).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * (np.abs(want).max() + 1), err_msg=name)


@pytest.mark.parametrize("shape", [[4, 6, 5, 16], [2, 32, 3, 3]])
def test_add_relu_equals_paddles_add_and_relu_exactly(shape):
    rng = np.random.default_rng(4)
    a0, b0, g = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
    results = []
    for fused in (True, False):
        a, b = paddle.to_tensor(a0, stop_gradient=False), paddle.to_tensor(b0, stop_gradient=False)
        y = onednn.add_relu(a, b) if fused else F.relu(a + b)
        (y * paddle.to_tensor(g)).sum().backward()
        results.append((y.numpy(), a.grad.numpy(), b.grad.numpy()))
    for fast, slow in zip(*results):
        np.testing.assert_array_equal(fast, slow)
    assert any(type(p).__name__ == "AddReluPlan" for p in onednn._PLANS.values())


def test_add_relu_falls_back_where_onednn_does_not_apply(monkeypatch):
    a, b = paddle.randn([2, 3, 4, 5]), paddle.randn([2, 3, 4, 5])
    strided = a.transpose([0, 2, 3, 1])  # a view: not contiguous
    np.testing.assert_array_equal(onednn.add_relu(strided, b.transpose([0, 2, 3, 1])).numpy(),
                                  F.relu(strided + b.transpose([0, 2, 3, 1])).numpy())
    np.testing.assert_array_equal(onednn.add_relu(a, b[:, :1]).numpy(), F.relu(a + b[:, :1]).numpy())
    monkeypatch.setenv("TOWERNET_ONEDNN", "0")
    np.testing.assert_array_equal(onednn.add_relu(a, b).numpy(), F.relu(a + b).numpy())


def test_resnet_block_ends_on_onednn_give_paddles_gradients_exactly(monkeypatch):
    """add_relu hands both inputs one gradient buffer; in a ResNet (identity and downsample
    shortcuts, the block input feeding conv1 too) every gradient equals Paddle's add + ReLU."""
    import models.baselines as baselines

    x = paddle.to_tensor(np.random.default_rng(5).standard_normal((2, 3, 64, 64)).astype(np.float32))
    weights = paddle.to_tensor(np.random.default_rng(6).standard_normal((2, 5)).astype(np.float32))
    grads = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(baselines.onednn, "add_relu", lambda a, b: F.relu(a + b))
        paddle.seed(0)
        net = create_model("resnet50", num_classes=5, data_format="NHWC")
        (net(x) * weights).sum().backward()
        grads.append({k: p.grad.numpy() for k, p in net.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 161
    for k in grads[0]:
        np.testing.assert_array_equal(grads[0][k], grads[1][k], err_msg=k)


@pytest.mark.parametrize("name", ["towernet_simam", "resnet50", "mobilenet_v2"])
def test_channels_last_models_train_on_paddles_kernels_too(monkeypatch, name):
    """train.channels_last=on without oneDNN (TOWERNET_ONEDNN=0, a GPU): Paddle's NHWC kernels."""
    monkeypatch.setenv("TOWERNET_ONEDNN", "0")
    net = create_model(name, num_classes=3, data_format="NHWC")
    net.train()
    x = paddle.to_tensor(np.random.default_rng(7).standard_normal((2, 3, 64, 64)).astype(np.float32))
    loss = F.cross_entropy(net(x), paddle.to_tensor([[0], [2]]))
    loss.backward()
    assert np.isfinite(float(loss))
    assert all(p.grad is not None for k, p in net.named_parameters() if k.endswith("weight") and "conv" in k)


@pytest.mark.parametrize("n", [2, 4])
def test_fork_sums_its_consumers_gradients_on_onednn_as_paddle_does(n):
    rng = np.random.default_rng(n)
    x = paddle.to_tensor(rng.standard_normal((2, 4, 4, 16)).astype(np.float32), stop_gradient=False)
    weights = [paddle.to_tensor(rng.standard_normal((2, 4, 4, 16)).astype(np.float32)) for _ in range(n)]
    h = x * 1.5
    views = onednn.fork(h, n)
    assert len({id(v) for v in views}) == n and all(v.data_ptr() == h.data_ptr() for v in views)  # no copies
    sum((v * w).sum() for v, w in zip(views, weights)).backward()
    want = 1.5 * sum(w.numpy() for w in weights)
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-6)
    with paddle.no_grad():  # nothing to sum: the tensor itself
        assert all(v is h for v in onednn.fork(h, n))


def test_fork_passes_the_gradient_of_its_only_used_view_on():
    x = paddle.to_tensor(np.ones((2, 3, 3, 8), np.float32), stop_gradient=False)
    a, _unused = onednn.fork(x * 2.0, 2)
    (a * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3, 3, 8), 6.0, np.float32))
