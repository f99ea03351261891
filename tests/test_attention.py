"""Attention modules: shapes, parameter counts, and numpy references written from the papers' formulas."""
import numpy as np
import paddle
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from models.attention import attend, create_attention, has_nam, list_attentions, nam_sparsity_penalty

SHAPES = [(2, 8, 1, 1), (2, 16, 5, 7), (3, 64, 9, 9), (1, 96, 2, 3), (2, 512, 4, 4)]


def n_params(layer):
    return sum(int(np.prod(p.shape)) for p in layer.parameters() if not p.stop_gradient)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def run(layer, x):
    layer.eval()
    with paddle.no_grad():
        return layer(paddle.to_tensor(x)).numpy().astype(np.float64)


def test_list_attentions_has_the_nine():
    assert list_attentions() == sorted(["simam", "se", "eca", "ca", "cbam", "nam", "darknet_se",
                                        "nonlocal", "sam"])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", list_attentions())
def test_keeps_shape_and_is_finite(name, shape):
    layer = create_attention(name, shape[1])
    y = layer(paddle.randn(shape))
    assert y.shape == list(shape)
    assert bool(paddle.isfinite(y).all())


def test_none_is_identity():
    assert isinstance(create_attention("none", 64), paddle.nn.Identity)


def test_unknown_attention_lists_names():
    with pytest.raises(ValueError) as e:
        create_attention("sea", 64)
    for name in list_attentions():
        assert name in str(e.value)


def test_simam_matches_numpy():
    x = np.random.default_rng(0).standard_normal((2, 8, 5, 6)).astype(np.float32)
    lam, n = 1e-4, 5 * 6 - 1
    xd = x.astype(np.float64)
    d = (xd - xd.mean(axis=(2, 3), keepdims=True)) ** 2
    y = d / (4 * (d.sum(axis=(2, 3), keepdims=True) / n + lam)) + 0.5
    np.testing.assert_allclose(run(create_attention("simam", 8), x), xd * sigmoid(y), atol=1e-5)


def test_simam_computes_a_float64_input_in_float64():
    # the float64 reference of bench/bf16_gradients.py: statistics and gate are not lowered
    x = np.random.default_rng(1).standard_normal((2, 8, 5, 6))
    lam, n = 1e-4, 5 * 6 - 1
    d = (x - x.mean(axis=(2, 3), keepdims=True)) ** 2
    y = d / (4 * (d.sum(axis=(2, 3), keepdims=True) / n + lam)) + 0.5
    out = create_attention("simam", 8)(paddle.to_tensor(x))
    assert out.dtype == paddle.float64
    np.testing.assert_allclose(out.numpy(), x * sigmoid(y), rtol=1e-12, atol=1e-12)


def test_simam_keeps_a_half_precision_input_dtype():
    # AMP feeds SimAM bfloat16/float16 activations on a GPU; on CPU Paddle has bfloat16
    # kernels only. The output keeps the input's dtype and agrees with the float32 result
    # to bfloat16's precision (statistics and gate are computed in float32).
    x = (np.random.default_rng(2).standard_normal((2, 4, 16, 16)) * 40).astype(np.float32)
    layer = create_attention("simam", 4)
    expected = layer(paddle.to_tensor(x)).numpy()
    out = layer(paddle.to_tensor(x).astype("bfloat16"))
    assert out.dtype == paddle.bfloat16
    np.testing.assert_allclose(out.astype("float32").numpy(), expected, rtol=2e-2, atol=0.5)


def test_simam_is_parameter_free_and_finite_on_1x1():
    layer = create_attention("simam", 64)
    assert n_params(layer) == 0 and len(layer.parameters()) == 0
    x = np.random.default_rng(1).standard_normal((2, 64, 1, 1)).astype(np.float32)
    out = run(layer, x)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, x * sigmoid(0.5), atol=1e-6)  # documented: d = 0 -> y = 0.5


def test_se_matches_numpy():
    c = 64
    layer = create_attention("se", c)
    w1, w2 = layer.fc1.weight.numpy(), layer.fc2.weight.numpy()  # paddle Linear weights are [in, out]
    x = np.random.default_rng(2).standard_normal((2, c, 5, 4)).astype(np.float32)
    s = x.mean(axis=(2, 3)).astype(np.float64)
    gate = sigmoid(np.maximum(s @ w1, 0) @ w2)
    np.testing.assert_allclose(run(layer, x), x * gate[:, :, None, None], atol=1e-5)


@pytest.mark.parametrize("c", [64, 256, 512])
def test_se_parameter_count(c):
    assert n_params(create_attention("se", c)) == 2 * c * c // 16


# k = |(log2 C + 1) / 2| made odd, by hand: 8 -> 2 -> 3, 64 -> 3, 128 -> 4 -> 5, 256 -> 4 -> 5, 1024 -> 5.
@pytest.mark.parametrize("c, k", [(8, 3), (64, 3), (128, 5), (256, 5), (1024, 5)])
def test_eca_kernel_size_is_its_parameter_count(c, k):
    layer = create_attention("eca", c)
    assert n_params(layer) == k
    assert layer.conv.weight.shape == [1, 1, k]


def test_eca_matches_numpy():
    c = 64  # k = 3
    layer = create_attention("eca", c)
    w = layer.conv.weight.numpy().reshape(-1).astype(np.float64)
    k = len(w)
    x = np.random.default_rng(3).standard_normal((2, c, 3, 5)).astype(np.float32)
    s = np.pad(x.mean(axis=(2, 3)).astype(np.float64), ((0, 0), (k // 2, k // 2)))
    conv = np.stack([s[:, j:j + c] * w[j] for j in range(k)]).sum(axis=0)
    np.testing.assert_allclose(run(layer, x), x * sigmoid(conv)[:, :, None, None], atol=1e-5)


def test_cbam_matches_numpy():
    c = 32
    layer = create_attention("cbam", c)
    w1, w2 = layer.channel.fc1.weight.numpy(), layer.channel.fc2.weight.numpy()
    wc = layer.spatial.conv.weight.numpy().astype(np.float64)  # [1, 2, 7, 7]
    x = np.random.default_rng(4).standard_normal((2, c, 6, 9)).astype(np.float32)
    xd = x.astype(np.float64)

    def mlp(v):
        return np.maximum(v @ w1, 0) @ w2

    ca = sigmoid(mlp(xd.mean(axis=(2, 3))) + mlp(xd.max(axis=(2, 3))))
    x1 = xd * ca[:, :, None, None]
    s = np.stack([x1.mean(axis=1), x1.max(axis=1)], axis=1)  # [N, 2, H, W]
    windows = sliding_window_view(np.pad(s, ((0, 0), (0, 0), (3, 3), (3, 3))), (7, 7), axis=(2, 3))
    sa = sigmoid(np.einsum("nchwij,cij->nhw", windows, wc[0]))
    np.testing.assert_allclose(run(layer, x), x1 * sa[:, None], atol=1e-5)


def test_nam_penalty_gradient_reaches_gamma():
    model = paddle.nn.Sequential(paddle.nn.Conv2D(3, 16, 3), create_attention("nam", 16))
    assert has_nam(model)
    penalty = nam_sparsity_penalty(model, weight=1e-4)
    penalty.backward()
    gamma = model[1].bn.weight
    assert gamma.grad is not None
    np.testing.assert_allclose(gamma.grad.numpy(), 1e-4 * np.sign(gamma.numpy()), rtol=1e-6)


def test_nam_gamma_is_not_detached_in_forward():
    layer = create_attention("nam", 8)
    layer(paddle.randn([4, 8, 3, 3])).sum().backward()
    assert layer.bn.weight.grad is not None and float(layer.bn.weight.grad.abs().sum()) > 0


def test_nam_spatial_branch():
    layer = create_attention("nam", 8, spatial_size=12)
    assert layer(paddle.randn([2, 8, 3, 4])).shape == [2, 8, 3, 4]
    assert nam_sparsity_penalty(layer) is not None
    with pytest.raises(ValueError):
        layer(paddle.randn([2, 8, 4, 4]))


def test_no_nam_no_penalty():
    model = create_attention("se", 32)
    assert not has_nam(model) and nam_sparsity_penalty(model) is None


def _randomise_bn(bn, rng):
    """Non-trivial BatchNorm scale, shift and running statistics (the layer runs in eval mode)."""
    c = bn.weight.shape[0]
    for t, v in ((bn.weight, rng.uniform(0.5, 1.5, c)), (bn.bias, rng.normal(0, 0.2, c)),
                 (bn._mean, rng.normal(0, 0.3, c)), (bn._variance, rng.uniform(0.5, 2.0, c))):
        t.set_value(v.astype(np.float32))
    return [t.numpy().astype(np.float64) for t in (bn.weight, bn.bias, bn._mean, bn._variance)]


def _bn_numpy(x, params, eps=1e-5):
    g, b, m, v = (p[None, :, None, None] for p in params)
    return (x - m) / np.sqrt(v + eps) * g + b


def _conv1x1(x, w, b=None):
    y = np.einsum("oc,nchw->nohw", w[:, :, 0, 0].astype(np.float64), x)
    return y if b is None else y + b.astype(np.float64)[None, :, None, None]


def test_sam_matches_numpy():
    c, rng = 12, np.random.default_rng(5)
    layer = create_attention("sam", c)
    bn = _randomise_bn(layer.bn, rng)
    x = rng.standard_normal((2, c, 5, 7)).astype(np.float32)
    xd = x.astype(np.float64)
    gate = sigmoid(_bn_numpy(_conv1x1(xd, layer.conv.weight.numpy()), bn))
    np.testing.assert_allclose(run(layer, x), xd * gate, atol=1e-5)
    assert n_params(layer) == c * c + 2 * c


def _nonlocal_numpy(layer, x, bn, sub_sample):
    theta = _conv1x1(x, layer.theta.weight.numpy(), layer.theta.bias.numpy())
    phi = _conv1x1(x, layer.phi.weight.numpy(), layer.phi.bias.numpy())
    g = _conv1x1(x, layer.g.weight.numpy(), layer.g.bias.numpy())
    if sub_sample:  # 2x2 max-pool, ceil mode: pad with -inf to even sizes
        def pool(t):
            n, c, h, w = t.shape
            t = np.pad(t, ((0, 0), (0, 0), (0, h % 2), (0, w % 2)), constant_values=-np.inf)
            return t.reshape(n, c, (h + 1) // 2, 2, (w + 1) // 2, 2).max(axis=(3, 5))
        phi, g = pool(phi), pool(g)
    n, ci, h, w = theta.shape
    q = theta.reshape(n, ci, h * w).transpose(0, 2, 1)
    k, v = phi.reshape(n, ci, -1), g.reshape(n, ci, -1).transpose(0, 2, 1)
    logits = q @ k
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    y = (weights @ v).transpose(0, 2, 1).reshape(n, ci, h, w)
    return x + _bn_numpy(_conv1x1(y, layer.out.weight.numpy()), bn), weights


@pytest.mark.parametrize("sub_sample", [False, True])
def test_nonlocal_matches_numpy(sub_sample):
    c, rng = 16, np.random.default_rng(6)
    layer = create_attention("nonlocal", c, sub_sample=sub_sample)
    bn = _randomise_bn(layer.bn, rng)  # a trained block: BN scale no longer zero
    x = rng.standard_normal((2, c, 5, 7)).astype(np.float32)
    expected, weights = _nonlocal_numpy(layer, x.astype(np.float64), bn, sub_sample)
    # float32 against float64: outputs reach ~4, so a relative term too (an absolute 1e-5
    # alone failed on 2 of 1120 values for some draws of the layer's initial weights)
    np.testing.assert_allclose(run(layer, x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.attention(paddle.to_tensor(x)).numpy(), weights, atol=1e-5)
    assert weights.shape[-1] == (12 if sub_sample else 35)


@pytest.mark.parametrize("train", [True, False])
def test_nonlocal_is_the_identity_when_built(train):
    layer = create_attention("nonlocal", 32)
    layer.train(train)
    x = paddle.randn([2, 32, 6, 6])
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())


def test_nonlocal_parameter_count():
    c = 64
    assert n_params(create_attention("nonlocal", c)) == 3 * (c * c // 2 + c // 2) + c // 2 * c + 2 * c


def test_attend_skips_maps_outside_min_and_max_hw():
    layer = create_attention("nonlocal", 8, max_hw=16)
    paddle.nn.initializer.Constant(1.0)(layer.bn.weight)  # no longer the identity
    inside, too_big, too_small = (paddle.randn([1, 8, h, w]) for h, w in ((4, 4), (4, 5), (1, 1)))
    assert attend(layer, too_big) is too_big
    assert attend(layer, too_small) is too_small
    assert not np.allclose(attend(layer, inside).numpy(), inside.numpy())
    assert create_attention("nonlocal", 8).max_hw == 1024
