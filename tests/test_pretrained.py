"""--pretrained: loading by name and shape, the report, lr multiplier, freezing, offline errors."""
import json

import numpy as np
import paddle
import pytest

from app.build import pretrained
from app.config.load import load_config
from app.run import checkpoint
from app.run.folder import RunFolder
from app.train import trainer
from app.util.errors import UserError
from conftest import optimizer_for, run_cli, train_cut_in_epoch_2
from models import create_model


@pytest.fixture(scope="module")
def vision_files(tmp_path_factory):
    """paddle.vision's resnet50 / mobilenet_v2 (1000 classes, fixed seed) saved as state dicts."""
    base = tmp_path_factory.mktemp("vision")
    paddle.seed(0)
    files = {}
    for name, build in (("resnet50", paddle.vision.models.resnet50),
                        ("mobilenet_v2", paddle.vision.models.mobilenet_v2)):
        files[name] = base / f"{name}.pdparams"
        paddle.save(build(num_classes=1000).state_dict(), str(files[name]))
    return files


@pytest.mark.parametrize("name, host", [("resnet50_se", "resnet50"), ("resnet50_simam", "resnet50"),
                                        ("mobilenet_v2_ca", "mobilenet_v2")])
def test_backbone_loads_exactly_head_and_attention_start_fresh(vision_files, name, host):
    file_state = paddle.load(str(vision_files[host]))
    paddle.seed(1)
    net = create_model(name, num_classes=16)
    report = pretrained.load_pretrained(net, str(vision_files[host]), name)
    own = net.state_dict()
    head, attention = pretrained.head_and_attention_keys(net)
    body = [k for k in own if k not in head and k not in attention]
    for k in body:
        np.testing.assert_array_equal(own[k].numpy(), file_state[k].numpy(), err_msg=k)
    head_key = next(k for k in head if k.endswith("weight"))
    assert own[head_key].shape[-1] == 16 and file_state[head_key].shape[-1] == 1000
    for k in attention:
        if k in file_state:
            raise AssertionError(f"attention key {k} in a paddle.vision file")
    assert sorted(report["loaded"]) == sorted(body)
    assert sorted(report["fresh"]["head"]) == sorted(head) and len(head) == 2
    assert sorted(report["fresh"]["attention"]) == sorted(attention)
    assert report["fresh"]["other"] == []
    assert sorted(report["unused"]) == sorted(head)  # the file's 1000-class head
    assert report["file_tensors"] == len(file_state)
    if name.endswith("simam"):
        assert not attention  # parameter-free: everything but the head loads
    line = pretrained.summary_line(report)
    assert f"loaded {len(body)} of the file's {len(file_state)} tensors" in line
    assert f"(2 head, {len(attention)} attention, 0 other)" in line


def test_a_file_of_another_network_is_refused(vision_files):
    with pytest.raises(UserError, match="another network") as e:
        pretrained.load_pretrained(create_model("resnet50"), str(vision_files["mobilenet_v2"]),
                                   "resnet50")
    assert "conv1.weight" in str(e.value)


def test_unreadable_and_missing_files_are_user_errors(tmp_path):
    bad = tmp_path / "bad.pdparams"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="cannot read"):
        pretrained.load_pretrained(create_model("towernet"), str(bad), "towernet")
    with pytest.raises(UserError, match="not found"):
        pretrained.resolve_source(str(tmp_path / "none.pdparams"), "towernet")
    with pytest.raises(UserError, match="no ImageNet weights for towernet"):
        pretrained.resolve_source("imagenet", "towernet_simam")


def test_imagenet_download_failure_is_one_line_with_the_url(monkeypatch):
    from paddle.utils import download

    def offline(url, md5sum=None):
        raise RuntimeError(f"Download from {url} failed. Retry limit reached")

    monkeypatch.setattr(download, "get_weights_path_from_url", offline)
    url, md5 = pretrained.imagenet_url("mobilenet_v2_se")
    assert url.endswith("mobilenet_v2_x1.0.pdparams") and len(md5) == 32
    with pytest.raises(UserError) as e:
        pretrained.resolve_source("imagenet", "mobilenet_v2_se")
    assert url in str(e.value) and "--pretrained /path/to/mobilenet_v2_x1.0.pdparams" in str(e.value)
    assert "\n" not in str(e.value)


def test_imagenet_weights_already_cached_are_used(monkeypatch, tmp_path):
    from paddle.utils import download

    seen = {}

    def cached(url, md5sum=None):
        seen["args"] = (url, md5sum)
        return str(tmp_path / "resnet50.pdparams")

    monkeypatch.setattr(download, "get_weights_path_from_url", cached)
    assert pretrained.resolve_source("imagenet", "resnet50_cbam") == tmp_path / "resnet50.pdparams"
    assert seen["args"] == paddle.vision.models.resnet.model_urls["resnet50"]


def test_cli_refuses_a_wrong_file_with_exit_2(tiny_split, tmp_path, vision_files):
    proc = run_cli("train.py", "--model", "resnet50", "--data", tiny_split, "--epochs", "1",
                   "--output", tmp_path, "--pretrained", vision_files["mobilenet_v2"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "does not fit resnet50" in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_backbone_lr_mult_scales_the_step_of_loaded_weights(vision_files):
    moves = {}
    for mult in (1.0, 0.1):
        paddle.seed(5)
        net = create_model("mobilenet_v2_se", num_classes=4)
        report = pretrained.load_pretrained(net, str(vision_files["mobilenet_v2"]), "mobilenet_v2_se")
        pretrained.scale_backbone_lr(net, report["loaded"], mult)
        # lr 1000: steps far above float32's resolution of the weights (w + dw is rounded)
        cfg = load_config(model="mobilenet_v2_se", overrides=[("optimizer.backbone_lr_mult", mult),
                                                               ("optimizer.lr", 1000.0)])
        opt = optimizer_for(cfg, net, 10)
        net.eval()  # BN with running statistics: the gradient does not depend on the batch
        before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
        paddle.seed(6)
        x = paddle.randn([2, 3, 32, 32])
        net(x).sum().backward()
        opt.step()
        moves[mult] = {k: v.numpy() - before[k] for k, v in net.state_dict().items()}
    loaded_weight = "features.2.conv.1.0.weight"
    head_weight = "classifier.1.weight"
    assert np.abs(moves[1.0][loaded_weight]).max() > 1e-3
    np.testing.assert_allclose(moves[0.1][loaded_weight], 0.1 * moves[1.0][loaded_weight],
                               rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(moves[0.1][head_weight], moves[1.0][head_weight], rtol=1e-4, atol=1e-7)


def _tiny_pretrained_file(tmp_path) -> str:
    paddle.seed(11)
    path = tmp_path / "pre.pdparams"
    paddle.save(create_model("towernet", num_classes=7).state_dict(), str(path))
    return str(path)


def _cfg(data, out, pre, **over):
    pairs = [("data.root", str(data)), ("output.dir", str(out)), ("train.epochs", 2),
             ("data.image_size", 32), ("train.batch_size", 12), ("data.cache", False),
             ("data.rotation", 0), ("data.hflip", False), ("model.pretrained", pre),
             ("train.freeze_epochs", 1)]
    return load_config(model="towernet", overrides=pairs + list(over.items()))


def test_freeze_epochs_keeps_loaded_weights_and_statistics_for_epoch_1(tiny_split, tmp_path, monkeypatch):
    pre = _tiny_pretrained_file(tmp_path)
    file_state = paddle.load(pre)
    snapshots, save_last = {}, checkpoint.save_last

    def spy(run_dir, network, optimizer, state, epoch, *args, **kwargs):
        snapshots[epoch] = {k: v.numpy().copy() for k, v in network.state_dict().items()}
        return save_last(run_dir, network, optimizer, state, epoch, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_last", spy)
    run = trainer.train(_cfg(tiny_split, tmp_path / "runs", pre))
    report = json.loads((run / "pretrained.json").read_text())
    assert report["fresh"]["head"] == ["fc.weight", "fc.bias"]
    body = [k for k in report["loaded"]]
    assert "b1.0.1._mean" in body  # BatchNorm statistics are loaded and frozen too
    for k in body:
        np.testing.assert_array_equal(snapshots[1][k], file_state[k].numpy(), err_msg=k)
    assert not np.array_equal(snapshots[1]["fc.weight"], snapshots[0]["fc.weight"])  # head trains
    changed = [k for k in body if not np.array_equal(snapshots[2][k], file_state[k].numpy())]
    assert "b1.0.0.weight" in changed and "b1.0.1._mean" in changed
    best = json.loads((run / "best.json").read_text())
    assert best["pretrained"]["source"] == pre and best["normalize"] == "split"


def test_frozen_then_resumed_run_equals_uninterrupted(tiny_split, tmp_path):
    pre = _tiny_pretrained_file(tmp_path)
    full = trainer.train(_cfg(tiny_split, tmp_path / "full", pre, **{"train.epochs": 3}))

    train_cut_in_epoch_2(_cfg(tiny_split, tmp_path / "cut", pre, **{"train.epochs": 3}),
                         tmp_path / "cut" / "towernet")
    run = tmp_path / "cut" / "towernet"
    assert json.loads((run / "state.json").read_text())["epoch"] == 1
    trainer.train(RunFolder(run).read_config(), run)
    a, b = paddle.load(str(full / "last.pdparams")), paddle.load(str(run / "last.pdparams"))
    for k in a:
        np.testing.assert_allclose(b[k].numpy(), a[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
