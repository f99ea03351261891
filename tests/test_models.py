"""The model registry, every registered model's forward/backward, and the summary tools."""
import math

import numpy as np
import paddle
import pytest

from models import create_model, list_models, model_spec
from models.attention import create_attention, list_attentions
from models.summary import count_macs, count_params, main as summary_main, measure_latency

# Hand count in models/towernet.py's docstring (convs + Linear, 16 classes, 256x256 input).
TOWERNET_MACS_256 = 28_311_552 + 301_989_888 + 301_989_888 + 150_994_944 + 11_053_056 + 4_096


def test_registry_names():
    names = set(list_models())
    expected = {"towernet", "vgg19", "resnet50", "mobilenet_v2"}
    expected |= {f"towernet_{a}" for a in list_attentions()}
    expected |= {f"resnet50_{a}" for a in list_attentions() if a != "darknet_se"}
    assert expected <= names
    assert list_models() == sorted(names)


def test_unknown_model_lists_names():
    with pytest.raises(ValueError) as e:
        create_model("towernet_sima")
    for name in list_models():
        assert name in str(e.value)


@pytest.mark.parametrize("size", [64, 224])
@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name, size):
    paddle.seed(0)
    model = create_model(name, num_classes=16)
    model.train()
    logits = model(paddle.randn([2, 3, size, size]))
    assert logits.shape == [2, 16]
    assert bool(paddle.isfinite(logits).all())
    logits.sum().backward()
    missing = [p.name for p in model.parameters() if not p.stop_gradient and p.grad is None]
    assert not missing, f"no gradient for {missing}"


def test_towernet_simam_has_towernet_parameter_count():
    assert count_params(create_model("towernet_simam")) == count_params(create_model("towernet"))


@pytest.mark.parametrize("train", [True, False])
def test_towernet_simam_at_128_is_finite_and_varies(train):
    paddle.seed(1)
    model = create_model("towernet_simam")
    model.train(train)
    with paddle.no_grad():
        out = model(paddle.randn([4, 3, 128, 128])).numpy()
    assert np.isfinite(out).all()
    assert out.std(axis=0).min() > 1e-6, "outputs do not depend on the input"


@pytest.mark.parametrize("size", [64, 300, 512])
def test_towernet_any_input_size(size):
    model = create_model("towernet_cbam")
    model.eval()
    with paddle.no_grad():
        assert model(paddle.randn([1, 3, size, size])).shape == [1, 16]


def test_model_spec_rebuilds_the_model():
    model = create_model("towernet_eca", num_classes=5)
    spec = model_spec(model)
    assert spec == {"name": "towernet_eca", "kwargs": {"num_classes": 5}}
    rebuilt = create_model(spec["name"], **spec["kwargs"])
    rebuilt.set_state_dict(model.state_dict())
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]


def test_resnet50_attention_placement():
    simam_block = create_model("resnet50_simam").layer1[0]
    assert type(simam_block.conv2[1]).__name__ == "SimAM"  # right after the 3x3 conv, before bn2
    se_block = create_model("resnet50_se").layer1[0]
    assert type(se_block.bn3[1]).__name__ == "SE"  # after bn3, before the residual add


def test_count_params_tiny_net():
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3), paddle.nn.BatchNorm2D(8), paddle.nn.Linear(4, 2))
    assert count_params(net) == (8 * 3 * 9 + 8) + (8 + 8) + (4 * 2 + 2)
    assert count_params(net, trainable_only=False) == count_params(net) + 16  # running mean/var


def test_count_macs_tiny_net_exact():
    net = paddle.nn.Sequential(
        paddle.nn.Conv2D(3, 8, 3, padding=1),             # 16*16 * 8 * 3*9
        paddle.nn.Conv2D(8, 8, 3, stride=2, padding=1, groups=4),  # 8*8 * 8 * (8/4)*9
        create_attention("eca", 8),                       # k=3 1-D conv: 8 outputs * 3
        paddle.nn.AdaptiveAvgPool2D(1),
        paddle.nn.Flatten(),
        paddle.nn.Linear(8, 5),                           # 8*5
    )
    assert count_macs(net, 16) == 16 * 16 * 8 * 27 + 8 * 8 * 8 * 18 + 8 * 3 + 8 * 5


@pytest.mark.parametrize("name", ["towernet", "towernet_simam"])
def test_count_macs_towernet_matches_hand_count(name):
    macs = count_macs(create_model(name), 256)
    assert math.isclose(macs, TOWERNET_MACS_256, rel_tol=0.02)
    assert abs(macs / 1e9 - 0.79) < 0.01


def test_measure_latency_and_cli(capsys):
    model = create_model("towernet")
    assert measure_latency(model, 64, steps=1, warmup=1) > 0
    assert model.training  # restored
    assert summary_main(["towernet", "--image-size", "64", "--no-latency"]) == 0
    assert "towernet" in capsys.readouterr().out
    assert summary_main(["no_such_model", "--no-latency"]) == 2
