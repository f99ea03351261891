"""The small-data recipe's pieces: augmentation, label smoothing, warm-up, recipe layering."""
import math
import random

import numpy as np
import paddle
import pytest
from PIL import Image

from app.build.loss import ClassificationLoss
from app.config.load import load_config
from app.data.augment import RAND_OPS, Augment, MixBatch, RandAugment
from app.data.dataset import ImageFolderDataset
from app.data.transforms import build_transform
from app.util.errors import UserError
from conftest import optimizer_for, run_cli, train_cut_in_epoch_2
from models import create_model

PIECES = {
    "random_resized_crop": Augment(random_resized_crop=True, crop_scale=(0.25, 1.0)),
    "color_jitter": Augment(color_jitter=0.4),
    "randaugment": Augment(randaugment_n=2, randaugment_m=9),
    "random_erasing": Augment(random_erasing=1.0),
    "crop_padding": Augment(crop_padding=6),
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


def test_crop_padding_is_a_window_of_the_zero_padded_image():
    pad, size = 4, 24
    transform = build_transform(size, (0.0,) * 3, (1.0,) * 3, train=True, rotation=0, hflip=False,
                                augment=Augment(crop_padding=pad))
    image = picture(size=(size, size))
    padded = np.pad(np.asarray(image, np.float32).transpose(2, 0, 1) / 255, ((0, 0), (pad, pad), (pad, pad)))
    offsets = set()
    random.seed(0), np.random.seed(0)
    for _ in range(30):
        out = transform(image)
        found = [(i, j) for i in range(2 * pad + 1) for j in range(2 * pad + 1)
                 if np.allclose(out, padded[:, i:i + size, j:j + size], atol=1e-6)]
        assert found, "not a window of the padded image"
        offsets.update(found)
    assert len(offsets) > 5  # it moves


def test_crop_padding_with_random_resized_crop_is_refused():
    with pytest.raises(UserError, match="data.crop_padding crops from the resized image"):
        load_config(model="towernet", overrides=[("data.crop_padding", 8), ("data.random_resized_crop", True)])


def test_towernet_drop_rate_is_dropout_before_the_classifier():
    paddle.seed(0)
    plain = create_model("towernet_simam", num_classes=3)
    dropped = create_model("towernet_simam", num_classes=3, drop_rate=0.5)
    assert plain.state_dict().keys() == dropped.state_dict().keys()
    dropped.set_state_dict(plain.state_dict())
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype("float32"))
    plain.eval(), dropped.eval()
    np.testing.assert_array_equal(dropped(x).numpy(), plain(x).numpy())  # eval: no dropout
    seen = {}
    dropped.drop.register_forward_pre_hook(lambda layer, inputs: seen.update(before=inputs[0].numpy()))
    dropped.fc.register_forward_pre_hook(lambda layer, inputs: seen.update(after=inputs[0].numpy()))
    dropped.train()
    dropped(x)
    before, after = seen["before"], seen["after"]
    kept = after != 0
    np.testing.assert_allclose(after[kept], 2 * before[kept], rtol=1e-6)  # upscaled in training
    live = before != 0
    assert live.sum() > 100 and 0.35 < (~kept[live]).mean() < 0.65  # about half dropped


@pytest.mark.parametrize("op", list(RAND_OPS))
def test_every_randaugment_op_keeps_size_and_mode(op):
    random.seed(0)
    out = RAND_OPS[op](picture(), 9)
    assert out.size == (80, 60) and out.mode == "RGB"


def test_randaugment_applies_n_ops():
    calls = []
    ops = {k: (lambda img, m, k=k: calls.append(k) or img) for k in RAND_OPS}
    import app.data.augment as aug

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
    opt = optimizer_for(cfg, create_model("towernet", num_classes=3), steps)
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
    from app.config.load import RECIPE_DIR, read_yaml

    recipe = read_yaml(RECIPE_DIR / "small_data.yaml")  # the config reader: follows _base_
    plain = load_config(model="towernet_simam")
    cfg = load_config(model="towernet_simam", recipe="small_data")
    assert cfg["train"]["recipe"] == "small_data" and plain["train"]["recipe"] == "reference"
    set_by_recipe = {(s, k) for s, keys in recipe.items() for k in keys}
    assert set_by_recipe and all(cfg[s][k] == recipe[s][k] for s, k in set_by_recipe)
    for section in cfg:  # everything else is the model's config (its YAML's L2 decay included)
        for key in cfg[section]:
            if (section, key) not in set_by_recipe and key != "recipe":
                assert cfg[section][key] == plain[section][key], (section, key)
    section, key = sorted(set_by_recipe)[0]
    flagged = load_config(model="towernet_simam", recipe="small_data",
                          overrides=[(f"{section}.{key}", plain[section][key])])
    assert flagged[section][key] == plain[section][key]  # -o beats the recipe
    assert load_config(model="towernet")["train"]["recipe"] == "reference"
    with pytest.raises(UserError, match="unknown recipe"):
        load_config(model="towernet", recipe="nope")
    with pytest.raises(UserError, match="crop_scale"):
        load_config(model="towernet", overrides=[("data.crop_scale", [0.9, 0.1])])


def test_recipe_file_of_ones_own_starts_from_a_base(tmp_path):
    from app.config.load import RECIPE_DIR

    variant = tmp_path / "erasing_variant.yaml"
    small = load_config(model="towernet", recipe="small_data")
    erasing = 0.5 if small["data"]["random_erasing"] != 0.5 else 0.25  # differs from small_data's
    variant.write_text(f"_base_: {RECIPE_DIR / 'small_data.yaml'}\n"
                       f"data: {{random_erasing: {erasing}}}\ntrain: {{ema_decay: 0.99}}\n")
    cfg = load_config(model="towernet", recipe=str(variant))
    assert cfg["train"]["recipe"] == "erasing_variant"
    assert cfg["data"]["random_erasing"] == erasing and cfg["train"]["ema_decay"] == 0.99
    changed = {(s, k) for s in cfg for k in cfg[s] if cfg[s][k] != small[s][k]}
    assert changed == {("data", "random_erasing"), ("train", "recipe")} | (
        {("train", "ema_decay")} if small["train"]["ema_decay"] != 0.99 else set())
    with pytest.raises(UserError, match="does not exist"):
        load_config(model="towernet", recipe=str(tmp_path / "missing.yaml"))


def test_study_keeps_recipes_apart(tiny_split, tmp_path):
    from app.study.runs import run_label

    assert run_label({"model": {"name": "towernet"}, "train": {"recipe": "small_data"}}) == "towernet +small_data"
    run_cli("train.py", "--models", "towernet", "--seeds", "0", "--recipe", "small_data",
            "--data", tiny_split, "--epochs", "1", "--image-size", "32", "--batch-size", "12",
            "-o", "data.cache=false", "--output", tmp_path, check=True)
    assert (tmp_path / "towernet+small_data-s0" / "config.yaml").is_file()
    assert "towernet +small_data" in (tmp_path / "report.md").read_text()


def _batch(n=6, k=4, size=16):
    rng = np.random.default_rng(1)
    return [(rng.standard_normal((3, size, size)).astype(np.float32), np.array([i % k]))
            for i in range(n)]


def test_mixup_targets_sum_to_one_and_blend_the_reversed_batch():
    from app.data.augment import MixBatch

    batch = _batch()
    np.random.seed(0)
    images, targets = MixBatch(4, mixup_alpha=0.4)(batch)
    assert images.shape == (6, 3, 16, 16) and targets.shape == (6, 4) and targets.dtype == np.float32
    np.testing.assert_allclose(targets.sum(1), 1.0, atol=1e-6)
    x = np.stack([b[0] for b in batch])
    lam = targets[0, 0]  # sample 0 is class 0; its partner (sample 5) is class 1
    np.testing.assert_allclose(images, lam * x + (1 - lam) * x[::-1], atol=1e-5)


def test_cutmix_weight_equals_the_pasted_area():
    from app.data.augment import MixBatch

    batch = _batch()
    x = np.stack([b[0] for b in batch])
    for seed in range(5):
        np.random.seed(seed)
        images, targets = MixBatch(4, cutmix_alpha=1.0)(batch)
        pasted = (images[0] != x[0]).any(axis=0).mean()  # fraction of pixels from the partner
        assert targets[0, 1] == pytest.approx(pasted, abs=1e-6)  # partner of 0 is 5 (class 1)
        np.testing.assert_allclose(targets.sum(1), 1.0, atol=1e-6)


def test_mixing_is_reproducible_and_off_keeps_one_hot():
    from app.data.augment import MixBatch

    mix = MixBatch(4, mixup_alpha=0.2, cutmix_alpha=1.0)
    np.random.seed(7)
    a = mix(_batch())
    np.random.seed(7)
    b = mix(_batch())
    np.testing.assert_array_equal(a[0], b[0]), np.testing.assert_array_equal(a[1], b[1])
    images, targets = MixBatch(4, mixup_alpha=0.2, prob=0.0)(_batch())
    assert set(np.unique(targets)) == {0.0, 1.0}


def test_soft_target_loss_equals_cross_entropy_with_one_hot():
    net = create_model("towernet", num_classes=4)
    net.train()
    loss = ClassificationLoss(net)
    logits = paddle.to_tensor(np.random.default_rng(2).standard_normal((3, 4)).astype("float32"))
    hard = paddle.to_tensor(np.array([[1], [0], [3]], dtype="int64"))
    soft = paddle.to_tensor(np.eye(4, dtype="float32")[[1, 0, 3]])
    assert float(loss(logits, soft)) == pytest.approx(float(loss(logits, hard)), rel=1e-5)


def test_ema_after_k_steps_equals_the_formula():
    from app.train.ema import ModelEMA

    paddle.seed(0)
    net = paddle.nn.Linear(3, 2)
    w0 = net.weight.numpy().astype(np.float64)
    ema = ModelEMA(net, decay=0.9)
    expected = w0.copy()
    rng = np.random.default_rng(0)
    for n in range(1, 6):
        net.weight.set_value(rng.standard_normal((3, 2)).astype("float32"))
        ema.on_train_batch_end(n - 1)
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * net.weight.numpy()
    np.testing.assert_allclose(ema.shadow["weight"].numpy(), expected, rtol=1e-5)
    live = net.weight.numpy().copy()
    ema.on_eval_begin()
    np.testing.assert_allclose(net.weight.numpy(), expected, rtol=1e-5)  # eval on the average
    ema.on_eval_end()
    np.testing.assert_array_equal(net.weight.numpy(), live)  # training goes on from its weights


def test_interrupted_run_with_warmup_and_ema_resumes_exactly(tiny_split, tmp_path):
    from app.run.folder import RunFolder
    from app.train import trainer

    def cfg(out):
        return load_config(model="towernet", overrides=[
            ("data.root", str(tiny_split)), ("output.dir", str(out)), ("train.epochs", 3),
            ("data.image_size", 32), ("train.batch_size", 12), ("data.cache", False),
            ("data.rotation", 0), ("data.hflip", False), ("train.warmup_epochs", 1),
            ("train.ema_decay", 0.9)])

    full = trainer.train(cfg(tmp_path / "full"))
    train_cut_in_epoch_2(cfg(tmp_path / "cut"), tmp_path / "cut" / "towernet")
    run = tmp_path / "cut" / "towernet"
    trainer.train(RunFolder(run).read_config(), run)
    assert [r["lr"] for r in RunFolder(run).read_metrics()] == pytest.approx(
        [r["lr"] for r in RunFolder(full).read_metrics()], abs=1e-9)
    a, b = paddle.load(str(full / "last.pdparams")), paddle.load(str(run / "last.pdparams"))
    assert "ema.fc.weight" in a and int(a["ema.@updates"].numpy()[0]) == int(b["ema.@updates"].numpy()[0]) == 9
    for k in a:
        np.testing.assert_allclose(b[k].numpy(), a[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


def test_with_every_piece_off_the_reference_path_is_taken():
    """The reference recipe builds exactly the pre-recipe pipeline: no piece is a no-op
    layer in the path (a tiny run's numbers then depend only on the reference code)."""
    import paddle.vision.transforms as T

    from app.data.transforms import ToCHW

    for cfg in (load_config(model="towernet_simam"), load_config(model="towernet_simam", recipe="reference")):
        d, t = cfg["data"], cfg["train"]
        transform = build_transform(48, (0.5,) * 3, (0.25,) * 3, train=True, rotation=d["rotation"],
                                    hflip=d["hflip"], augment=Augment.from_config(d))
        assert [type(s) for s in transform.transforms] == [T.Resize, T.RandomRotation,
                                                           T.RandomHorizontalFlip, ToCHW]
        assert transform.transforms[-1].erase is None
        assert MixBatch.from_config(t, 16) is None and t["ema_decay"] == 0
        schedule = optimizer_for(cfg, create_model("towernet", num_classes=3), 7)._learning_rate
        assert type(schedule) is paddle.optimizer.lr.CosineAnnealingDecay and schedule.T_max == 7 * t["epochs"]
        net = create_model("towernet", num_classes=5)
        logits = paddle.to_tensor(np.random.default_rng(1).standard_normal((4, 5)).astype("float32"))
        label = paddle.to_tensor(np.array([[0], [3], [4], [1]], dtype="int64"))
        net.train()
        loss = ClassificationLoss(net, label_smoothing=t["label_smoothing"])(logits, label)
        assert float(loss) == float(paddle.nn.functional.cross_entropy(logits, label))  # bit for bit


@pytest.mark.parametrize("exempt", [False, True])
def test_no_decay_norm_bias_leaves_1d_parameters_undecayed(exempt):
    cfg = load_config(model="towernet", overrides=[("optimizer.weight_decay", 0.1), ("optimizer.lr", 0.5),
                                                   ("optimizer.no_decay_norm_bias", exempt)])
    net = create_model("towernet", num_classes=3)
    opt = optimizer_for(cfg, net, 10)
    before = {p.name: p.numpy().copy() for p in net.parameters()}
    for p in net.parameters():  # a zero gradient: only the decay moves a parameter
        p.grad = paddle.zeros_like(p)
    opt.step()
    moved = {p.name: not np.array_equal(p.numpy(), before[p.name]) for p in net.parameters()
             if np.abs(before[p.name]).max() > 0 and not p.stop_gradient}  # not BN's running statistics
    one_d = {p.name for p in net.parameters() if len(p.shape) <= 1}
    assert one_d and any(n not in one_d for n in moved)
    assert all(moved[n] for n in moved if n not in one_d)  # weights always decay
    assert all(moved[n] != exempt for n in moved if n in one_d)  # BN scales and biases: unless exempt


def test_nesterov_momentum_equals_its_formula():
    lr, mu = 0.1, 0.9
    for nesterov in (False, True):
        cfg = load_config(model="towernet", overrides=[("optimizer.weight_decay", 0.0), ("optimizer.lr", lr),
                                                       ("optimizer.momentum", mu), ("optimizer.nesterov", nesterov),
                                                       ("train.epochs", 1000)])
        net = create_model("towernet", num_classes=3)
        opt = optimizer_for(cfg, net, 1)
        p = net.parameters()[0]
        w0 = p.numpy().copy()
        g = np.full(p.shape, 0.5, np.float32)
        v = np.zeros_like(w0)
        w = w0.copy()
        for _ in range(2):
            p.grad = paddle.to_tensor(g)
            opt.step()
            v = mu * v + g
            w = w - lr * (g + mu * v if nesterov else v)  # the lr hardly moves over 2 of 1000 steps
        np.testing.assert_allclose(p.numpy(), w, rtol=1e-5, atol=1e-6)
