"""data_tools/split.py: determinism, stratification, bad input, --force, --demo."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.util.errors import UserError
from data_tools.demo import make_demo_images
from data_tools.split import DEFAULT_CLASSES, split_dataset, split_demo
from tests.helpers_images import make_tree, tree_bytes, write_image

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, str(REPO / "data_tools" / "split.py"), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def assert_user_error(result, *words):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for w in words:
        assert w in lines[0]


def split(src, dst, **kw):
    return split_dataset(src, dst, progress=False, **kw)


def read_list(dst, name):
    return [line.rsplit(" ", 1) for line in (Path(dst) / name).read_text().splitlines()]


def test_two_splits_are_byte_identical(tmp_path):
    src = make_tree(tmp_path / "src", {"a": 7, "b": 5, "c": 11})
    split(src, tmp_path / "d1", seed=3)
    split(src, tmp_path / "d2", seed=3)
    first = tree_bytes(tmp_path / "d1")
    assert first == tree_bytes(tmp_path / "d2")
    assert {"manifest.json", "train.txt", "eval.txt"} <= set(first)
    split(src, tmp_path / "d3", seed=4)
    assert (tmp_path / "d3" / "eval.txt").read_bytes() != first["eval.txt"]


@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.9])
def test_stratified_counts_and_no_overlap(tmp_path, ratio):
    sizes = {"c2": 2, "c3": 3, "c5": 5, "c7": 7, "c10": 10, "c13": 13}
    src = make_tree(tmp_path / "src", sizes)
    m = split(src, tmp_path / "dst", eval_ratio=ratio)
    assert m["classes"] == sorted(sizes)
    assert m["train"] + m["eval"] == sum(sizes.values())
    for cls, n in sizes.items():
        want_eval = min(max(round(n * ratio), 1), n - 1)
        assert m["counts"][cls] == {"train": n - want_eval, "eval": want_eval}
        train = {p.name for p in (tmp_path / "dst" / "train" / cls).iterdir()}
        evals = {p.name for p in (tmp_path / "dst" / "eval" / cls).iterdir()}
        assert not train & evals
        assert train | evals == {p.name for p in (src / cls).iterdir()}
    for name in ("train", "eval"):
        rows = read_list(tmp_path / "dst", f"{name}.txt")
        assert len(rows) == m[name]
        for rel, label in rows:
            assert (tmp_path / "dst" / rel).is_file()
            assert m["classes"][int(label)] == rel.split("/")[1]


def test_bad_files_ignored_or_skipped(tmp_path, capsys):
    src = make_tree(tmp_path / "src", {"a": 4, "b": 4, "empty": 0})
    for junk in (".DS_Store", "Thumbs.db", "notes.txt", "._img_000.jpg"):
        (src / "a" / junk).write_bytes(b"junk")
    (src / "README.txt").write_text("not a class")
    (src / "a" / "zero.jpg").write_bytes(b"")
    good = (src / "b" / "img_000.jpg").read_bytes()
    (src / "b" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (src / "b" / "garbage.png").write_bytes(b"\x89PNG not really")
    m = split(src, tmp_path / "dst")
    assert m["classes"] == ["a", "b"]
    assert m["counts"]["a"]["train"] + m["counts"]["a"]["eval"] == 4
    assert m["counts"]["b"]["train"] + m["counts"]["b"]["eval"] == 4
    reasons = {s["path"]: s["reason"] for s in m["skipped"]}
    assert set(reasons) == {"a/zero.jpg", "b/truncated.jpg", "b/garbage.png", "empty/"}
    assert all(reasons.values())
    assert "empty" in capsys.readouterr().err
    written = [p.name for p in (tmp_path / "dst").rglob("*") if p.is_file()]
    assert not {"notes.txt", ".DS_Store", "Thumbs.db", "zero.jpg", "truncated.jpg"} & set(written)


def test_class_with_one_usable_image_is_named(tmp_path):
    src = make_tree(tmp_path / "src", {"a": 3, "lonely": 1})
    with pytest.raises(UserError, match="lonely"):
        split(src, tmp_path / "dst")


@pytest.mark.parametrize("case", ["missing", "no_classes", "unknown_class", "bad_ratio"])
def test_cli_user_errors(tmp_path, case):
    src = make_tree(tmp_path / "src", {"a": 3, "b": 3})
    if case == "missing":
        r, word = run_cli("--src", tmp_path / "nope", "--dst", tmp_path / "dst"), "nope"
    elif case == "no_classes":
        (tmp_path / "flat").mkdir()
        write_image(tmp_path / "flat" / "x.jpg")
        r, word = run_cli("--src", tmp_path / "flat", "--dst", tmp_path / "dst"), "class"
    elif case == "unknown_class":
        r, word = run_cli("--src", src, "--dst", tmp_path / "dst", "--classes", "a,zebra"), "zebra"
    else:
        r = run_cli("--src", src, "--dst", tmp_path / "dst", "--eval-ratio", "1.5")
        word = "eval-ratio"
    assert_user_error(r, word)
    assert not (tmp_path / "dst").exists() or not any((tmp_path / "dst").iterdir())


def test_cli_split_prints_summary(tmp_path):
    src = make_tree(tmp_path / "src", {"a": 5, "b c": 5})
    r = run_cli("--src", src, "--dst", tmp_path / "dst", "--classes", "a,b c")
    assert r.returncode == 0, r.stderr
    assert "b_c" in r.stdout and "total" in r.stdout
    assert json.loads((tmp_path / "dst" / "manifest.json").read_text())["classes"] == ["a", "b_c"]


def test_non_empty_dst_refused_and_force_keeps_foreign_files(tmp_path):
    src = make_tree(tmp_path / "src", {"a": 6, "b": 6})
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "mine.txt").write_text("user data")
    assert_user_error(run_cli("--src", src, "--dst", dst), "--force")
    split(src, dst, force=True, seed=0)
    (dst / "train" / "a" / "notes.md").write_text("also mine")
    before = json.loads((dst / "manifest.json").read_text())
    with pytest.raises(UserError, match="not empty"):
        split(src, dst, seed=1)
    m = split(src, dst, force=True, seed=1, classes=["b"])
    assert (dst / "mine.txt").read_text() == "user data"
    assert (dst / "train" / "a" / "notes.md").read_text() == "also mine"
    assert not any(p.suffix == ".jpg" for p in (dst / "train" / "a").iterdir())
    assert not (dst / "eval" / "a").exists()  # emptied by --force, so removed
    ours = {p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file()}
    assert ours == set(m["files"]) | {"mine.txt", "train/a/notes.md"}
    assert before["files"] != m["files"]


def test_force_never_overwrites_foreign_file_at_output_path(tmp_path):
    src = make_tree(tmp_path / "src", {"a": 3, "b": 3})
    dst = tmp_path / "dst"
    (dst / "train" / "a").mkdir(parents=True)
    for name in ("img_000.jpg", "img_001.jpg", "img_002.jpg"):
        (dst / "train" / "a" / name).write_text("user file")
    with pytest.raises(UserError, match="not written by an earlier split"):
        split(src, dst, force=True)
    assert (dst / "train" / "a" / "img_000.jpg").read_text() == "user file"


def test_sanitised_names_do_not_collide(tmp_path):
    src = tmp_path / "src"
    for i, name in enumerate(["a b.jpg", "a_b.jpg", "A_B.jpg", "a?b.jpg", "x.jpg"]):
        write_image(src / "my class" / name, seed=i)
    write_image(src / "other" / "o1.jpg", 10)
    write_image(src / "other" / "o2.jpg", 11)
    m = split(src, tmp_path / "dst")
    assert m["classes"] == ["my_class", "other"]
    out = [p for s in ("train", "eval") for p in (tmp_path / "dst" / s / "my_class").iterdir()]
    assert len(out) == 5 and len({p.name.lower() for p in out}) == 5
    assert all(" " not in p.name and "?" not in p.name for p in out)
    assert len({p.read_bytes() for p in out}) == 5


def test_manifest_mean_std_match_numpy(tmp_path):
    src = make_tree(tmp_path / "src", {"a": 5, "b": 4})
    write_image(src / "a" / "gray.png", 99, size=(33, 21), mode="L")
    m = split(src, tmp_path / "dst")
    pixels = []
    for rel, _ in read_list(tmp_path / "dst", "train.txt"):
        with Image.open(tmp_path / "dst" / rel) as img:
            pixels.append(np.asarray(img.convert("RGB"), np.float64).reshape(-1, 3) / 255.0)
    allpx = np.concatenate(pixels)
    np.testing.assert_allclose(m["mean"], allpx.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(m["std"], allpx.std(0), rtol=0, atol=1e-9)


def test_num_classes_takes_largest_and_never_background(tmp_path):
    src = make_tree(tmp_path / "src", {"BACKGROUND_Google": 9, "Faces_easy": 9, "big": 6,
                                       "tie_b": 4, "tie_a": 4, "small": 3})
    assert split(src, tmp_path / "d1", num_classes=3)["classes"] == ["big", "tie_a", "tie_b"]
    with pytest.raises(UserError, match="num-classes"):
        split(src, tmp_path / "d2", num_classes=5)
    named = split(src, tmp_path / "d3", classes=["small", "Faces_easy"])
    assert named["classes"] == ["Faces_easy", "small"]


def test_defaults_are_the_reference_classes(tmp_path):
    assert len(DEFAULT_CLASSES) == 16 and DEFAULT_CLASSES[0] == "Leopards"
    src = make_tree(tmp_path / "src", {c: 2 for c in DEFAULT_CLASSES + ["Faces_easy", "ant"]})
    m = split(src, tmp_path / "dst")
    assert m["classes"] == sorted(DEFAULT_CLASSES)
    del_one = make_tree(tmp_path / "src2", {c: 2 for c in DEFAULT_CLASSES[1:]})
    with pytest.raises(UserError, match="Leopards"):
        split(del_one, tmp_path / "dst2")


def test_dst_inside_src_refused(tmp_path):
    src = make_tree(tmp_path / "src", {"a": 3, "b": 3})
    with pytest.raises(UserError, match="inside"):
        split(src, src / "out")


def test_link_mode_hard_links(tmp_path):
    src = make_tree(tmp_path / "src", {"a": 3, "b": 3})
    split(src, tmp_path / "dst", link=True)
    out = next((tmp_path / "dst" / "train" / "a").iterdir())
    assert out.stat().st_nlink == 2


def test_demo_images_are_deterministic_and_sized(tmp_path):
    names = make_demo_images(tmp_path / "a", num_classes=16, per_class=2, seed=5)
    make_demo_images(tmp_path / "b", num_classes=16, per_class=2, seed=5)
    assert len(set(names)) == 16 and "circle" in names
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    for p in (tmp_path / "a").rglob("*.jpg"):
        with Image.open(p) as img:
            assert img.mode == "RGB" and all(128 <= s <= 256 for s in img.size)


def test_demo_split_is_deterministic(tmp_path):
    m = split_demo(tmp_path / "d1", seed=1, per_class=5, progress=False)
    split_demo(tmp_path / "d2", seed=1, per_class=5, progress=False)
    assert tree_bytes(tmp_path / "d1") == tree_bytes(tmp_path / "d2")
    assert len(m["classes"]) == 16 and m["train"] == 64 and m["eval"] == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d1", "d2"]  # sources cleaned up


def test_cli_demo(tmp_path):
    r = run_cli("--demo", "--dst", tmp_path / "demo", "--seed", "2")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "demo" / "manifest.json").read_text())
    assert m["train"] + m["eval"] == 16 * 60 and m["complete"]
    assert_user_error(run_cli("--demo", "--dst", tmp_path / "demo"), "--force")
