"""Grad-CAM: equals CAM where CAM is defined, finds each host's last conv stage, the CLI grid."""
import json
import shutil

import numpy as np
import paddle
import pytest

from app.data.picks import pick_images
from app.inspect.gradcam import gradcam, target_layer
from conftest import run_cli
from models import create_model


def test_gradcam_at_the_last_stage_equals_cam_from_the_linear_weights():
    # TowerNet ends in inc3 -> global average pool -> Linear: d y_c / d A_k = W[k, c] / (h*w).
    paddle.seed(0)
    net = create_model("towernet_se", num_classes=6)
    images = np.random.default_rng(0).standard_normal((3, 3, 96, 96)).astype("float32")
    targets = [1, 4, 0]
    cams, probs = gradcam(net, images, targets, layer=net.inc3)
    captured = {}
    net.inc3.register_forward_post_hook(lambda _, i, o: captured.update(a=o.numpy()))
    with paddle.no_grad():
        logits = net(paddle.to_tensor(images)).numpy()
    acts = captured["a"].astype(np.float64)  # [N, K, h, w]
    w = net.fc.weight.numpy().astype(np.float64)  # [K, classes]
    hw = acts.shape[2] * acts.shape[3]
    cam = np.maximum(np.einsum("nkhw,nk->nhw", acts, w[:, targets].T), 0) / hw
    np.testing.assert_allclose(cams, cam, rtol=1e-4, atol=1e-5)
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(1, keepdims=True), atol=1e-6)
    assert net.training is False and all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("name, expected", [("towernet_simam", "inc3"), ("resnet50_se", "layer4"),
                                            ("mobilenet_v2_ca", "features.18"),
                                            ("vgg19", "features.34")])
def test_target_layer_per_host(name, expected):
    net = create_model(name, num_classes=4)
    assert target_layer(net)[0] == expected
    assert target_layer(net, 512)[0] == expected  # every last stage is >= 4x4 at 512 px


def test_target_layer_steps_back_from_maps_under_4x4():
    net = create_model("towernet", num_classes=4)
    assert target_layer(net, 128)[0] == "inc1"  # inc2's output is 2x2, inc3's 1x1 at 128 px
    assert target_layer(net, 256)[0] == "inc2"
    assert target_layer(create_model("resnet50", num_classes=4), 128)[0] == "layer4"  # 4x4


def test_pick_images_spreads_over_classes_and_repeats():
    samples = [(f"{c}/{i}.png", c) for c in range(4) for i in range(5)]
    picked = pick_images(samples, list("abcd"), 8, seed=3)
    assert len(picked) == len(set(picked)) == 8
    assert sorted(label for _, label in picked) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert picked == pick_images(samples, list("abcd"), 8, seed=3)
    assert picked != pick_images(samples, list("abcd"), 8, seed=4)


def test_gradcam_cli_grid_across_runs(tiny_run, tmp_path):
    runs, _ = tiny_run
    a = tmp_path / "a"
    shutil.copytree(runs / "towernet_simam", a)
    b = tmp_path / "b"
    shutil.copytree(runs / "towernet_simam", b)
    proc = run_cli("eval.py", "--gradcam", "4", "--runs", a, b, "--target", "true",
                   "--out", tmp_path / "out", check=True)
    assert "gradcam.png" in proc.stdout
    from PIL import Image

    with Image.open(tmp_path / "out" / "gradcam.png") as img:
        width, height = img.size
    assert height > width  # 4 rows x 2 columns
    from visualdl import LogReader

    for run in (a, b):
        files = [p for p in run.iterdir() if p.name.startswith("vdlrecords")]
        assert len(files) == 1  # VisualDL shows only a run's newest file: the training records too
        tags = LogReader(file_path=str(files[0])).get_tags()
        assert "gradcam/true" in tags["image"] and "eval/top1" in tags["scalar"]

    meta = json.loads((b / "best.json").read_text())
    meta["image_size"] = 32
    (b / "best.json").write_text(json.dumps(meta))
    proc = run_cli("eval.py", "--gradcam", "2", "--runs", a, b, "--out", tmp_path / "out")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "image size" in proc.stderr
    proc = run_cli("eval.py", "--runs", a, b)
    assert proc.returncode == 2 and "--gradcam" in proc.stderr


@pytest.mark.parametrize("args, flag", [(["--gradcam", "0", "--run", "runs/x"], "--gradcam"),
                                        (["--runs", "runs/x", "runs/y"], "--runs")])
def test_gradcam_without_images_is_one_line_naming_the_flag_given(args, flag):
    proc = run_cli("eval.py", *args)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: {flag}: Grad-CAM needs --gradcam N with N >= 1 "
                                   f"images (over --run R or --runs R1 R2 ...)")
