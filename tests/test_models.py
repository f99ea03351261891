"""The model registry, every registered model's forward/backward, and the summary tools."""
import math

import numpy as np
import paddle
import pytest

from models import create_model, list_models, model_spec
from models.attention import create_attention, list_attentions
from models.summary import count_macs, count_params, measure_latency
from models.summary import main as summary_main

# Hand count in models/towernet.py's docstring (convs + Linear, 16 classes, 256x256 input).
TOWERNET_MACS_256 = 28_311_552 + 301_989_888 + 301_989_888 + 150_994_944 + 11_053_056 + 4_096


def test_registry_names():
    names = set(list_models())
    expected = {"towernet", "vgg19", "resnet50", "mobilenet_v2"}
    expected |= {f"towernet_{a}" for a in list_attentions()}
    expected |= {f"resnet50_{a}" for a in list_attentions() if a != "darknet_se"}
    expected |= {f"mobilenet_v2_{a}" for a in list_attentions()}
    assert {"towernet_nonlocal", "towernet_sam", "resnet50_nonlocal", "resnet50_sam",
            "mobilenet_v2_ca", "mobilenet_v2_nonlocal"} <= expected
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
    # An attention module skipped on a map outside its min_hw / max_hw (non-local on the
    # large early maps) leaves its parameters without a gradient; every other one gets one.
    ran = set()
    hooks = [m.register_forward_post_hook(lambda layer, i, o: ran.add(id(layer)))
             for m in model.sublayers() if hasattr(m, "min_hw")]
    logits = model(paddle.randn([2, 3, size, size]))
    for h in hooks:
        h.remove()
    assert logits.shape == [2, 16]
    assert bool(paddle.isfinite(logits).all())
    logits.sum().backward()
    skipped = {id(p) for m in model.sublayers() if hasattr(m, "min_hw") and id(m) not in ran
               for p in m.parameters()}
    missing = [p.name for p in model.parameters()
               if not p.stop_gradient and p.grad is None and id(p) not in skipped]
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
    assert type(simam_block.att).__name__ == "SimAM" and simam_block.position == "conv2"
    se_block = create_model("resnet50_se").layer1[0]
    assert type(se_block.att).__name__ == "SE" and se_block.position == "bn3"
    assert se_block.att.fc1.weight.shape[0] == 256  # bn3's width


def test_resnet50_nonlocal_in_five_blocks_of_res3_and_res4():
    model = create_model("resnet50_nonlocal")
    where = [name for name, m in model.named_sublayers() if type(m).__name__ == "NonLocal"]
    assert where == ["layer2.1.att", "layer2.3.att", "layer3.1.att", "layer3.3.att", "layer3.5.att"]


def test_resnet50_nonlocal_at_init_computes_plain_resnet50():
    paddle.seed(3)
    plain, nl = create_model("resnet50"), create_model("resnet50_nonlocal")
    nl.set_state_dict(plain.state_dict())  # backbone weights; the non-local blocks keep theirs
    plain.eval(), nl.eval()
    x = paddle.randn([1, 3, 64, 64])
    np.testing.assert_allclose(nl(x).numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-6)


def test_mobilenet_v2_attention_sits_after_the_depthwise_conv():
    model = create_model("mobilenet_v2_se")
    blocks = [m for m in model.features if hasattr(m, "att")]
    assert len(blocks) == 17
    for block in blocks:
        depthwise = block.conv[block._depthwise][0]
        assert depthwise._groups == depthwise._in_channels > 1  # the 3x3 depthwise conv
        assert block.att.fc1.weight.shape[0] == depthwise._out_channels
    # The module runs between the depthwise conv's ReLU6 and the projection.
    seen = []
    block = blocks[3]
    for layer in (block.conv[block._depthwise], block.att, block.conv[block._depthwise + 1]):
        layer.register_forward_post_hook(lambda layer, i, o, tag=type(layer).__name__: seen.append(tag))  # noqa: B008
    model.eval()
    with paddle.no_grad():
        model(paddle.randn([1, 3, 64, 64]))
    assert seen == ["ConvNormActivation", "SE", "Conv2D"]


HOSTS = {"resnet50": paddle.vision.models.resnet50,
         "mobilenet_v2": paddle.vision.models.mobilenet_v2}


@pytest.mark.parametrize("name", [n for n in list_models() if n.startswith(tuple(f"{h}_" for h in HOSTS))])
def test_hosts_keep_every_paddle_vision_key_and_shape(name):
    host = "resnet50" if name.startswith("resnet50_") else "mobilenet_v2"
    plain = {k: v.shape for k, v in HOSTS[host](num_classes=16).state_dict().items()}
    ours = {k: v.shape for k, v in create_model(name, num_classes=16).state_dict().items()}
    assert {k: ours.get(k) for k in plain} == plain
    assert all(".att." in k for k in set(ours) - set(plain))


def test_checkpoints_of_the_earlier_resnet50_layout_still_load():
    from models import upgrade_state_dict

    model = create_model("resnet50_se")
    state = model.state_dict()
    legacy = {}
    for key, value in state.items():  # the earlier layout: conv2 / bn3 wrapped in a Sequential
        block, _, rest = key.partition(".att.")
        if rest:
            legacy[f"{block}.bn3.1.{rest}"] = value
        elif ".bn3." in key and key.startswith("layer"):
            legacy[key.replace(".bn3.", ".bn3.0.")] = value
        else:
            legacy[key] = value
    upgraded, changed = upgrade_state_dict(legacy)
    assert changed and upgrade_state_dict(state)[1] is False
    assert set(upgraded) == set(state)


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
