"""The small-data recipe's pieces: augmentation, label smoothing, warm-up, recipe layering."""
import math
import random

import numpy as np
import paddle
import pytest
from PIL import Image

from app.augment import RAND_OPS, Augment, RandAugment
from app.config import load_config
from app.data import ImageFolderDataset, build_transform
from app.engine import ClassificationLoss, build_optimizer
from app.errors import UserError
from conftest import run_cli
from models import create_model

PIECES = {
    "random_resized_crop": Augment(random_resized_crop=True, crop_scale=(0.25, 1.0)),
    "color_jitter": Augment(color_jitter=0.4),
    "randaugment": Augment(randaugment_n=2, randaugment_m=9),
    "random_erasing": Augment(random_erasing=1.0),
}


def picture(seed=0, size=(80, 60)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("name", list(PIECES))
def test_each_piece_keeps_shape_and_dtype_and_is_reproducible(name):
    transform = build_transform(48, (0.5,) * 3, (0.25,) * 3, train=True, rotation=0, hflip=False,
                                augment=PIECES[name])
    random.seed(3), np.random.seed(3)  # paddle's transforms draw from both, as seed_everything seeds
    a = transform(picture())
    random.seed(3), np.random.seed(3)
    b = transform(picture())
    assert a.shape == (3, 48, 48) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    draws = [transform(picture()) for _ in range(4)]
    assert any(not np.array_equal(draws[0], d) for d in draws[1:])
    plain = build_transform(48, (0.5,) * 3, (0.25,) * 3, train=False)(picture())
    assert not np.array_equal(a, plain)  # the piece did something


def test_random_erasing_fills_the_mean_colour_after_normalisation():
    transform = build_transform(32, (0.5,) * 3, (0.25,) * 3, train=True, rotation=0, hflip=False,
                                augment=Augment(random_erasing=1.0, erasing_area=(0.2, 0.2)))
    out = transform(Image.new("RGB", (32, 32), (255, 255, 255)))
    zeros = (out == 0).all(axis=0).mean()
    assert 0.1 < zeros < 0.3 and np.isclose(out.max(), 2.0)  # (1 - 0.5) / 0.25 elsewhere


@pytest.mark.parametrize("op", list(RAND_OPS))
def test_every_randaugment_op_keeps_size_and_mode(op):
    random.seed(0)
    out = RAND_OPS[op](picture(), 9)
    assert out.size == (80, 60) and out.mode == "RGB"


def test_randaugment_applies_n_ops():
    calls = []
    ops = {k: (lambda img, m, k=k: calls.append(k) or img) for k in RAND_OPS}
    import app.augment as aug

    saved = dict(aug.RAND_OPS)
    aug.RAND_OPS.clear(), aug.RAND_OPS.update(ops)
    try:
        RandAugment(3, 5)(picture())
    finally:
        aug.RAND_OPS.clear(), aug.RAND_OPS.update(saved)
    assert len(calls) == 3


def test_random_resized_crop_caches_larger_images(tiny_split):
    ds = ImageFolderDataset(tiny_split, "train", image_size=32, cache=True, progress=False,
                            augment=Augment(random_resized_crop=True))
    assert ds.cache.shape[1:] == (40, 40, 3)  # 1.25 x 32: real pixels for the crop
    assert ds[0][0].shape == (3, 32, 32)
    evaluation = ImageFolderDataset(tiny_split, "eval", image_size=32, cache=True, train=False,
                                    progress=False, augment=Augment(random_resized_crop=True))
    assert evaluation.cache.shape[1:] == (32, 32, 3)


def test_smoothed_loss_equals_its_formula():
    net = create_model("towernet", num_classes=5)
    loss = ClassificationLoss(net, label_smoothing=0.1)
    logits = paddle.to_tensor(np.random.default_rng(0).standard_normal((4, 5)).astype("float32"))
    label = paddle.to_tensor(np.array([[0], [3], [4], [1]], dtype="int64"))
    z = logits.numpy().astype(np.float64)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    target = np.full((4, 5), 0.1 / 5)
    target[np.arange(4), [0, 3, 4, 1]] += 0.9
    net.train()
    assert float(loss(logits, label)) == pytest.approx(-(target * logp).sum(1).mean(), rel=1e-5)
    net.eval()  # evaluation: plain cross-entropy
    assert float(loss(logits, label)) == pytest.approx(-logp[np.arange(4), [0, 3, 4, 1]].mean(), rel=1e-5)


def test_warmup_then_cosine_lr_equals_the_closed_form():
    steps, epochs, warm = 10, 6, 2
    cfg = load_config(model="towernet", overrides=[("train.epochs", epochs), ("train.warmup_epochs", warm),
                                                   ("optimizer.lr", 0.1)])
    opt = build_optimizer(cfg, create_model("towernet", num_classes=3), steps)
    lrs = []
    for _ in range(steps * epochs):
        lrs.append(opt.get_lr())
        opt._learning_rate.step()
    w, total = warm * steps, steps * epochs
    for t in (0, 5, 19, 20, 35, 59):
        expected = 0.1 * t / w if t < w else 0.05 * (1 + math.cos(math.pi * (t - w) / (total - w)))
        assert lrs[t] == pytest.approx(expected, abs=1e-9), t
    assert lrs[-1] < 0.1 * 0.01  # the cosine ends at the last step


def test_recipe_layers_between_the_model_yaml_and_flags():
    cfg = load_config(model="towernet_simam", recipe="small_data",
                      overrides=[("train.label_smoothing", 0.2)])
    assert cfg["train"]["recipe"] == "small_data" and cfg["data"]["random_resized_crop"] is True
    assert cfg["train"]["label_smoothing"] == 0.2  # -o beats the recipe
    assert cfg["optimizer"]["weight_decay"] == 2e-4  # the model's YAML still applies
    assert load_config(model="towernet")["train"]["recipe"] == "reference"
    with pytest.raises(UserError, match="unknown recipe"):
        load_config(model="towernet", recipe="nope")
    with pytest.raises(UserError, match="crop_scale"):
        load_config(model="towernet", overrides=[("data.crop_scale", [0.9, 0.1])])


def test_study_keeps_recipes_apart(tiny_split, tmp_path):
    from app.study import run_label

    assert run_label({"model": {"name": "towernet"}, "train": {"recipe": "small_data"}}) == "towernet +small_data"
    run_cli("train.py", "--models", "towernet", "--seeds", "0", "--recipe", "small_data",
            "--data", tiny_split, "--epochs", "1", "--image-size", "32", "--batch-size", "12",
            "-o", "data.cache=false", "--output", tmp_path, check=True)
    assert (tmp_path / "towernet+small_data-s0" / "config.yaml").is_file()
    assert "towernet +small_data" in (tmp_path / "report.md").read_text()
