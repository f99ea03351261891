"""K-fold views of a split: the train and eval images pooled, divided into stratified folds.

``fold_assignment(labels, k, seed)`` gives every image its fold: each class's images are
shuffled with the seed and dealt round-robin, starting where the previous class stopped, so
per class the fold counts differ by at most one (and so do the fold sizes). The same seed
gives the same folds; each seed is a new random partition, so seeds x folds is repeated
K-fold, and ``--seeds 0,1,2,3,4 --folds 2`` is Dietterich's 5x2cv.

``write_fold_split(split, dst, k, fold, seed)`` lays fold ``fold`` out as an ordinary split
folder: ``dst/train/<class>/`` (the other folds) and ``dst/eval/<class>/`` (this fold) as
symbolic links to the original images (copies where links are not possible), and a
manifest.json with the mean/std of this fold's train part and the fingerprint of the split
it was made from. It lives inside the study's output folder; the original split is only read.
"""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from app.data.images import IMAGE_EXTENSIONS, mean_std, pixel_sums
from app.data.split import load_manifest, split_fingerprint, split_mismatch
from app.util.atomic import atomic_write_json
from app.util.errors import UserError


def fold_assignment(labels, k: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of every image, stratified by ``labels``, deterministic in ``seed``."""
    labels = np.asarray(labels)
    folds = np.empty(len(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    start = 0
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        folds[idx] = (start + np.arange(len(idx))) % k
        start = (start + len(idx)) % k
    return folds


def pooled_samples(split) -> tuple[list, list]:
    """(classes, [(path, label)]) of the split's train and eval images together, sorted."""
    split = Path(split)
    manifest = load_manifest(split)
    if manifest is None:
        raise UserError(f"--folds needs a split made by data_tools/split.py "
                        f"({split / 'manifest.json'} missing)")
    classes = manifest["classes"]
    samples = []
    for label, name in enumerate(classes):
        for part in ("train", "eval"):
            folder = split / part / name
            if folder.is_dir():
                samples += [(p, label) for p in sorted(folder.iterdir())
                            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    return classes, sorted(samples, key=lambda s: (s[1], str(s[0])))


def write_fold_split(split, dst, k: int, fold: int, seed: int) -> Path:
    """Fold ``fold`` of ``k`` (seed ``seed``) of ``split`` as a split folder at ``dst``.

    Returns ``dst``. A complete fold folder from an earlier call is reused when it was made
    from this split where it is now; from this split before it moved (its links would
    dangle), it is made again; from another split, it is refused.
    """
    dst = Path(dst)
    made = load_manifest(dst)
    source = made and made.get("source_fingerprint")
    if made and source is None:  # made before fingerprints were recorded
        return dst
    why = made and split_mismatch(split, source)
    if why:
        raise UserError(f"{dst} was made from another split; {split} {why}; --data the split "
                        f"this study started on, or give it another --output")
    fingerprint = source or split_fingerprint(split)  # equal when made
    if made and made.get("source") == str(Path(split).resolve()):
        return dst
    classes, samples = pooled_samples(split)
    folds = fold_assignment([label for _, label in samples], k, seed)
    tmp = dst.with_name(f".{dst.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    counts = {"train": [0] * len(classes), "eval": [0] * len(classes)}
    train_files = []
    for (path, label), f in zip(samples, folds):
        part = "eval" if f == fold else "train"
        target = tmp / part / classes[label] / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(path.resolve(), target)
        except OSError:
            shutil.copy2(path, target)
        counts[part][label] += 1
        if part == "train":
            train_files.append(path)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL frees the GIL
        mean, std = mean_std(list(pool.map(pixel_sums, train_files)))
    atomic_write_json(tmp / "manifest.json", {
        "classes": classes, "counts": counts, "mean": mean, "std": std,
        "fold": fold, "folds": k, "seed": seed, "source": str(Path(split).resolve()),
        "source_fingerprint": fingerprint, "complete": True})
    old = dst.with_name(f".{dst.name}.old")
    if old.exists():  # left by a swap that was killed
        shutil.rmtree(old)
    if made:  # the split moved: the folder made from it before goes once the new one is whole
        os.rename(dst, old)
    os.rename(tmp, dst)  # whole, or not at all
    if made:
        shutil.rmtree(old)
    return dst
