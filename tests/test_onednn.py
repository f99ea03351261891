"""backend.onednn: convolutions on the oneDNN inside the Paddle wheel compute what F.conv2d does."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

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


@pytest.mark.parametrize("n,ci,co,k,stride,padding,dilation,groups,bias,hw", CASES)
def test_forward_and_all_gradients_match_float64(n, ci, co, k, stride, padding, dilation, groups, bias, hw):
    rng = np.random.default_rng(ci * 100 + k)
    x = rng.standard_normal((n, ci, hw, hw))
    w = rng.standard_normal((co, ci // groups, k, k)) * 0.1
    b = rng.standard_normal(co) if bias else None
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    out_shape = F.conv2d(paddle.to_tensor(x), paddle.to_tensor(w), None, **geometry).shape
    dy = rng.standard_normal(out_shape)
    expected = conv_and_grads(x, w, b, dy, F.conv2d, **geometry)
    got = conv_and_grads(*(None if a is None else a.astype(np.float32) for a in (x, w, b, dy)),
                         onednn.conv2d, **geometry)
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
    assert kinds == {"ConvPlan", "MaxPoolPlan"}  # the oneDNN path ran
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
        paddle.nn.Conv2D(8, 8, 3, padding=1, data_format="NHWC"),
        paddle.nn.MaxPool2D(3, 2, 1),
        paddle.nn.MaxPool2D(3, 2, 1, ceil_mode=True),  # ceil mode: left
    )
    keys, weights = list(net.state_dict()), [p for p in net.parameters()]
    first = net[0]
    onednn.convert(net)
    assert net[0] is first and type(net[0]) is onednn.Conv2D
    assert [type(layer) for layer in net[1:4]] == [paddle.nn.Conv2D] * 3
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
