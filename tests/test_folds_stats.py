"""K-fold studies and the per-image statistics of the report."""
import json
import math
import shutil

import numpy as np
import pytest

from app.data.folds import fold_assignment, pooled_samples, write_fold_split
from app.study import significance
from app.util.errors import UserError
from conftest import run_cli


@pytest.mark.parametrize("k", [2, 3, 5])
def test_folds_are_stratified_disjoint_and_deterministic(k):
    labels = np.repeat(np.arange(6), [7, 12, 5, 20, 9, 3])
    folds = fold_assignment(labels, k, seed=1)
    assert set(folds) == set(range(k))
    for c in range(6):
        per_fold = np.bincount(folds[labels == c], minlength=k)
        assert per_fold.max() - per_fold.min() <= 1
    sizes = np.bincount(folds, minlength=k)
    assert sizes.max() - sizes.min() <= 1
    assert np.array_equal(folds, fold_assignment(labels, k, seed=1))
    assert not np.array_equal(folds, fold_assignment(labels, k, seed=2))


def test_fold_splits_cover_every_image_once_per_seed(tiny_split, tmp_path):
    classes, samples = pooled_samples(tiny_split)
    everything = {p.name for p, _ in samples}
    evaluated = []
    for fold in range(3):
        split = write_fold_split(tiny_split, tmp_path / f"f{fold}", 3, fold, seed=0)
        train = {p.name for p in (split / "train").rglob("*") if p.is_file()}
        evals = {p.name for p in (split / "eval").rglob("*") if p.is_file()}
        assert not train & evals and train | evals == everything
        evaluated += sorted(evals)
        manifest = json.loads((split / "manifest.json").read_text())
        assert manifest["classes"] == classes and manifest["fold"] == fold
        assert len(manifest["mean"]) == 3 and all(0 < s < 1 for s in manifest["std"])
    assert sorted(evaluated) == sorted(everything)  # each image evaluated exactly once
    assert {p.name for p in (tiny_split / "train").rglob("*") if p.is_file()} <= everything


def test_fold_folder_follows_a_moved_split_and_refuses_another(tiny_split, tmp_path):
    from data_tools.split import split_dataset

    data, moved, other = tmp_path / "data", tmp_path / "moved", tmp_path / "other"
    shutil.copytree(tiny_split, data)
    fold = write_fold_split(data, tmp_path / "f0", 3, 0, seed=0)
    names = sorted(p.relative_to(fold) for p in fold.rglob("*.jpg"))
    assert write_fold_split(data, fold, 3, 0, seed=0) == fold  # reused as it is

    # The split moved: the old links dangle, so the fold folder is made again, the same images.
    data.rename(moved)
    assert not all(p.exists() for p in fold.rglob("*.jpg"))
    write_fold_split(moved, fold, 3, 0, seed=0)
    assert sorted(p.relative_to(fold) for p in fold.rglob("*.jpg")) == names
    assert all(p.exists() for p in fold.rglob("*.jpg"))
    assert json.loads((fold / "manifest.json").read_text())["source"] == str(moved.resolve())
    assert not list(tmp_path.glob(".f0.*"))

    # Another split (the same images drawn with another seed): refused, the folder kept.
    split_dataset(tiny_split.parent / "src", other, eval_ratio=0.25, seed=1, progress=False)
    with pytest.raises(UserError, match="made from another split"):
        write_fold_split(other, fold, 3, 0, seed=0)
    assert sorted(p.relative_to(fold) for p in fold.rglob("*.jpg")) == names


def test_mcnemar_exact_matches_the_binomial_by_hand():
    # b = 2, c = 8: two-sided p = 2 * P(X <= 2), X ~ Binomial(10, 1/2) = 2 * 56/1024
    assert significance.mcnemar_exact(2, 8) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert significance.mcnemar_exact(8, 2) == significance.mcnemar_exact(2, 8)
    assert significance.mcnemar_exact(5, 5) == 1.0 and significance.mcnemar_exact(0, 0) == 1.0
    assert significance.mcnemar_exact(0, 6) == pytest.approx(2 / 64)


def test_mcnemar_exact_takes_more_discordant_images_than_a_float_power_of_two():
    # Studies pool their units: 33 seeds of 364 eval images gave 1,076 discordant images,
    # where 2.0 ** n overflows; the exact tail in integers, for comparison.
    from fractions import Fraction

    for b, c in [(520, 556), (3000, 3300), (50, 1100)]:
        n, k = b + c, min(b, c)
        exact = float(2 * Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2 ** n))
        assert significance.mcnemar_exact(b, c) == pytest.approx(exact, rel=1e-9)


def test_p_outperform_is_1_but_not_certain_when_a_is_right_on_a_strict_superset_of_b():
    rng = np.random.default_rng(0)
    a_units, b_units = [], []
    for _ in range(4):
        b = rng.random(50) < 0.6
        a = b.copy()
        a[np.flatnonzero(~b)[:3]] = True  # A also gets three images B misses
        a_units.append(a), b_units.append(b)
    result = significance.p_outperform(a_units, b_units)
    # A won every unit, but four units are not certainty: the Wilson interval says so.
    assert result["p"] == 1.0 and result["units"] == 4
    assert 0.4 < result["ci95"][0] < 0.6 and result["ci95"][1] == 1.0
    assert significance.discordant(a_units, b_units) == [0, 12]


def test_bootstrap_interval_covers_the_true_gap_about_95_percent():
    rng = np.random.default_rng(7)
    true_gap, covered, studies = 0.03, 0, 300
    for _ in range(studies):
        a_units, b_units = [], []
        for _ in range(10):  # 10 seed/fold units of 150 images, with unit-level noise
            pb = 0.8 + rng.normal(0, 0.02)
            pa = pb + true_gap + rng.normal(0, 0.02)
            u = rng.random(150)
            a_units.append(u < pa), b_units.append(u < pb)  # paired: same image difficulty
        lo, hi = significance.paired_bootstrap(a_units, b_units, reps=300, seed=1)["ci95_pp"]
        covered += lo <= 100 * true_gap <= hi
    assert 0.88 <= covered / studies <= 0.99, covered / studies


def test_mde_and_units_needed():
    assert significance.mde_pp(1.0) == pytest.approx(2.8016, abs=1e-3)
    assert significance.units_needed(5, 1.0, 1.4) == math.ceil(5 * (2.8016 / 1.4) ** 2)


def test_tiny_folds_study_end_to_end(tiny_split, tmp_path):
    proc = run_cli("train.py", "--models", "towernet,towernet_se", "--seeds", "0", "--folds", "3",
                   "--data", tiny_split, "--epochs", "1", "--image-size", "32", "--batch-size", "12",
                   "-o", "data.cache=false", "--output", tmp_path, check=True)
    assert "study ETA" in proc.stdout
    runs = sorted(p.name for p in tmp_path.iterdir() if (p / "config.yaml").is_file())
    assert runs == [f"{m}-s0-f{k}" for m in ("towernet", "towernet_se") for k in range(3)]
    seen = []
    for k in range(3):
        lines = (tmp_path / f"towernet-s0-f{k}" / "predictions.csv").read_text().splitlines()
        assert lines[0] == "path,label,pred,prob_label,prob_pred"
        seen += [line.split(",")[0] for line in lines[1:]]
        best = json.loads((tmp_path / f"towernet-s0-f{k}" / "best.json").read_text())
        assert best["fold"] == k and best["folds"] == 3
    assert len(seen) == len(set(seen)) == 48  # all 48 images, each evaluated once
    report = json.loads((tmp_path / "report.json").read_text())
    vs = next(m for m in report["models"] if m["model"] == "towernet_se")["vs_baseline"]
    for key in ("bootstrap_ci95_pp", "p_outperform", "mcnemar_p", "discordant", "mde_pp"):
        assert key in vs, key
    assert vs["bootstrap_units"] == 3 and vs["bootstrap_images"] == 48
    text = (tmp_path / "report.md").read_text()
    assert "detect" in text and "paired by seed and fold" in text and "| s0 f0,1,2 |" in text
    assert f"McNemar p = {vs['mcnemar_p']:.3g} pooled, per unit [" in text
    assert report["kfold"] is True and len(vs["mcnemar_p_per_unit"]) == 3
