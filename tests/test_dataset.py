"""app/data/dataset.py: RGB-safe reading, item shapes/dtypes, the cache, user errors."""
import json
import shutil

import numpy as np
import paddle
import pytest
from PIL import Image

from app.data.dataset import FALLBACK_MEAN, ImageFolderDataset
from app.data.images import read_rgb
from app.data.split import load_manifest
from app.util.errors import UserError
from data_tools.split import split_dataset
from tests.helpers_images import make_tree, random_image, write_image

# (file name, PIL mode saved) for every mode the loader must turn into RGB.
MODES = [("gray.jpg", "L"), ("cmyk.jpg", "CMYK"), ("rgba.png", "RGBA"), ("la.png", "LA"),
         ("palette.png", "P"), ("bilevel.bmp", "1"), ("rgb.png", "RGB")]


def save_mode(path, mode, seed=0):
    img = random_image(seed, (37, 23), mode)
    if mode == "P":
        img.info["transparency"] = 0
        img.save(path, transparency=0)
    else:
        img.save(path)
    return path


@pytest.mark.parametrize("name,mode", MODES)
def test_modes_load_as_rgb(tmp_path, name, mode):
    path = save_mode(tmp_path / name, mode)
    with Image.open(path) as raw:
        assert raw.mode == mode
    img = read_rgb(path)
    a = np.asarray(img)
    assert img.mode == "RGB" and a.shape == (23, 37, 3) and a.dtype == np.uint8


def test_alpha_is_composited_on_white(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 0] = 200
    a[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(a, "RGBA").save(tmp_path / "x.png")
    out = np.asarray(read_rgb(tmp_path / "x.png"))
    assert (out[:2] == [200, 0, 0]).all() and (out[2:] == 255).all()


def test_16_bit_is_scaled_not_clipped(tmp_path):
    a = np.array([[0, 1000, 32896, 65535]], np.uint16)
    Image.fromarray(a).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as raw:
        assert raw.mode.startswith("I")
    out = np.asarray(read_rgb(tmp_path / "deep.png"))
    assert out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 4, 128, 255]


def test_exif_orientation_applied(tmp_path):
    img = random_image(1, (40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    img.save(tmp_path / "phone.jpg", exif=exif)
    assert read_rgb(tmp_path / "phone.jpg").size == (20, 40)


@pytest.fixture
def split_root(tmp_path):
    src = make_tree(tmp_path / "src", {"cat": 5, "dog": 4, "eel": 3})
    for i, (name, mode) in enumerate(MODES):
        save_mode(src / ("cat", "dog", "eel")[i % 3] / name, mode, seed=100 + i)
    write_image(src / "dog" / "deep.png", 7)
    deep = np.arange(600, dtype=np.uint16).reshape(20, 30) * 100
    Image.fromarray(deep).save(src / "eel" / "deep16.png")
    split_dataset(src, tmp_path / "split", progress=False)
    return tmp_path / "split"


@pytest.mark.parametrize("split", ["train", "eval"])
def test_items_are_float32_chw_and_int64_labels(split_root, split):
    ds = ImageFolderDataset(split_root, split, image_size=32)
    manifest = load_manifest(split_root)
    assert ds.classes == manifest["classes"] == ["cat", "dog", "eel"]
    assert len(ds) == manifest[split]
    assert ds.mean == tuple(manifest["mean"]) and ds.std == tuple(manifest["std"])
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 32, 32) and x.dtype == np.float32 and np.isfinite(x).all()
        assert y.shape == (1,) and y.dtype == np.int64 and y[0] == ds.samples[i][1]


def test_cached_eval_items_equal_uncached(split_root):
    plain = ImageFolderDataset(split_root, "eval", image_size=24)
    cached = ImageFolderDataset(split_root, "eval", image_size=24, cache=True, progress=False)
    assert cached.cache.shape == (len(plain), 24, 24, 3) and cached.cache.dtype == np.uint8
    for i in range(len(plain)):
        np.testing.assert_array_equal(plain[i][0], cached[i][0])
        assert plain[i][1] == cached[i][1]


def test_cached_train_items_are_still_augmented(split_root):
    ds = ImageFolderDataset(split_root, "train", image_size=24, cache=True, progress=False,
                            rotation=30)
    draws = {ds[0][0].tobytes() for _ in range(8)}
    assert len(draws) > 1
    assert ds[0][0].shape == (3, 24, 24)


def test_dataloader_batches(split_root):
    ds = ImageFolderDataset(split_root, "train", image_size=16)
    x, y = next(iter(paddle.io.DataLoader(ds, batch_size=4, shuffle=True)))
    assert x.shape == [4, 3, 16, 16] and y.shape == [4, 1]
    assert x.dtype == paddle.float32 and y.dtype == paddle.int64


def test_fallback_stats_warn_without_manifest(split_root):
    (split_root / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="manifest"):
        ds = ImageFolderDataset(split_root, "eval", image_size=16)
    assert ds.mean == FALLBACK_MEAN and ds.manifest is None


def test_missing_data_is_a_user_error(tmp_path, split_root):
    with pytest.raises(UserError, match="--demo"):
        ImageFolderDataset(tmp_path / "nowhere", "train")
    with pytest.raises(UserError, match="test"):
        ImageFolderDataset(split_root, "test")
    empty = tmp_path / "empty"
    (empty / "train" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="--demo"):
        ImageFolderDataset(empty, "train")


def test_class_mismatch_and_unfinished_split_are_user_errors(split_root):
    shutil.rmtree(split_root / "eval" / "eel")
    with pytest.raises(UserError, match="differ"):
        ImageFolderDataset(split_root, "eval")
    m = json.loads((split_root / "manifest.json").read_text())
    m["complete"] = False
    (split_root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="did not finish"):
        ImageFolderDataset(split_root, "train")


def test_to_chw_is_the_normalisation_formula_in_contiguous_chw():
    from app.data.transforms import ToCHW

    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    out = ToCHW(mean, std)(Image.fromarray(hwc))
    expected = (hwc.transpose(2, 0, 1) / 255.0 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    assert out.shape == (3, 5, 7) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def _data_section(split, **over):
    from app.config.load import load_config

    cfg = load_config(model="towernet", overrides=[("data.root", str(split)), *over.items()])
    return cfg["data"]


def test_cache_auto_keeps_what_fits_and_streams_the_rest_saying_so(tiny_split, capsys):
    from app.data.dataset import train_and_eval

    data = _data_section(tiny_split, **{"data.image_size": 128})
    assert data["cache"] == "auto"
    train, evaluation = train_and_eval(data)  # 48 images x 128 x 128 x 3: 2.4 MB, fits
    assert train.cache is not None and evaluation.cache is not None
    cached = [evaluation[i][0] for i in range(len(evaluation))]

    data["cache_max_mb"] = 1
    train, evaluation = train_and_eval(data)
    assert train.cache is None and evaluation.cache is None
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line == ("data.cache=auto: decoding the images every epoch: cached, they would take "
                    "2 MB, over the 1 MB budget (data.cache_max_mb)")
    for i, image in enumerate(cached):  # the same pixels either way
        np.testing.assert_array_equal(evaluation[i][0], image)


def test_cache_true_that_cannot_fit_is_one_line_and_false_never_caches(tiny_split, monkeypatch):
    from app.data import dataset

    monkeypatch.setattr(dataset, "available_memory", lambda: 2**20)
    with pytest.raises(UserError, match=r"data.cache=true: the decoded images would take 2 MB of the 1 MB"):
        dataset.train_and_eval(_data_section(tiny_split, **{"data.image_size": 128, "data.cache": True}))
    train, evaluation = dataset.train_and_eval(_data_section(tiny_split, **{"data.cache": False}))
    assert train.cache is None and evaluation.cache is None
    with pytest.raises(UserError, match="must be true, false or auto"):
        _data_section(tiny_split, **{"data.cache": "yes"})
