"""Split a folder of class folders (or an archive holding one) into DST/train and DST/eval.

    python data_tools/split.py --src data/101_ObjectCategories --dst data/caltech16
    python data_tools/split.py --demo            # procedural 16-class set into data/demo

Each class is split on its own: eval gets round(n * eval_ratio) images (Python's round,
clamped to 1..n-1) chosen by a seeded shuffle of the sorted file list, so the same inputs
and seed give byte-identical output anywhere. Every image is fully decoded first; the ones
PIL cannot decode are skipped and listed in the manifest. DST/manifest.json records the
classes (index = label), counts, RGB mean/std of the train split and every file written,
which is what ``--force`` is allowed to delete. Importing this module does not import paddle.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np
from tqdm import tqdm

from app.data.images import IMAGE_EXTENSIONS, mean_std, pixel_sums
from app.util.atomic import atomic_write_text
from app.util.errors import UserError, exit_on_user_error
from data_tools import archive, demo

DEFAULT_SRC = "data/101_ObjectCategories"
DEFAULT_DST = "data/caltech16"
DEMO_DST = "data/demo"
# The 16 classes of the reference study, in its order; labels follow sorted names instead.
DEFAULT_CLASSES = ["Leopards", "watch", "bonsai", "car_side", "ketch", "chandelier", "hawksbill",
                   "grand_piano", "brain", "butterfly", "helicopter", "menorah", "trilobite",
                   "starfish", "kangaroo", "sunflower"]
# Caltech101 folders that are not object classes; --num-classes never picks them.
NOT_AUTO_CLASSES = ("BACKGROUND_Google", "Faces_easy")
MANIFEST_VERSION = 1
def sanitize_name(name: str) -> str:
    """A portable file/folder name: anything outside [A-Za-z0-9._-] becomes '_'."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return "_" + out[1:] if out.startswith(".") else (out or "_")


def _unique_names(rel_paths: list[str]) -> dict[str, str]:
    """Map each source file name to a distinct sanitised file name.

    Collisions are resolved case-insensitively (macOS/Windows DSTs) by suffixing _1, _2, ...
    in sorted order, so the mapping is deterministic.
    """
    used: set[str] = set()
    out = {}
    for rel in sorted(rel_paths):
        base = sanitize_name(rel)
        stem, ext = os.path.splitext(base)
        name, k = base, 0
        while name.lower() in used:
            k += 1
            name = f"{stem}_{k}{ext}"
        used.add(name.lower())
        out[rel] = name
    return out


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def scan_classes(root: Path) -> dict[str, list[str]]:
    """{class folder name: sorted image file names directly inside it}.

    Non-image and hidden files are ignored, and so are subfolders of a class folder: a
    recursive scan would turn a folder one level too high into a single class.
    """
    found = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and not _is_hidden(entry.name):
            found[entry.name] = sorted(
                f.name for f in os.scandir(entry.path) if f.is_file() and not _is_hidden(f.name)
                and f.name.lower().endswith(IMAGE_EXTENSIONS))
    return found


def find_class_root(folder: Path) -> Path | None:
    """The shallowest folder at or below ``folder`` with a class folder holding images."""
    queue = [folder]
    while queue:
        current = queue.pop(0)
        if any(scan_classes(current).values()):
            return current
        queue.extend(sorted(p for p in current.iterdir() if p.is_dir() and not _is_hidden(p.name)))
    return None


def _select_classes(found: dict[str, list[str]], classes: list[str] | None,
                    num_classes: int | None) -> tuple[list[str], bool]:
    """(chosen source class names, explicit). Explicit classes must not be empty."""
    if classes is not None and num_classes is not None:
        raise UserError("give either --classes or --num-classes, not both")
    if not found:
        raise UserError("source has no class folders (expected SRC/<class>/<image files>)")
    if num_classes is not None:
        ranked = sorted((n for n in found if n not in NOT_AUTO_CLASSES and found[n]),
                        key=lambda n: (-len(found[n]), n))
        if not 1 <= num_classes <= len(ranked):
            raise UserError(f"--num-classes must be in 1..{len(ranked)} for this source, "
                            f"got {num_classes}")
        return ranked[:num_classes], True
    if classes is None:
        if not any(n in found for n in DEFAULT_CLASSES):
            return sorted(found), False  # not Caltech101: take every class folder
        classes = DEFAULT_CLASSES
    unknown = [c for c in classes if c not in found]
    if unknown:
        known = ", ".join(sorted(found)[:12]) + (", ..." if len(found) > 12 else "")
        raise UserError(f"unknown class {unknown[0]!r} (source has: {known})")
    if len(set(classes)) != len(classes):
        raise UserError("a class is named twice in --classes")
    return list(classes), True


def _check_image(path: str) -> tuple[np.ndarray | None, str | None]:
    """([sum R,G,B, sum of squares R,G,B, pixel count] as int64, None) or (None, reason)."""
    try:
        return pixel_sums(path), None
    except Exception as e:  # PIL raises many types for a bad file; any of them means skip it
        return None, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _clear_previous_split(dst: Path) -> None:
    """Delete the files an earlier split's manifest lists, then the folders they leave empty."""
    for name in ("manifest.json", "train.txt", "eval.txt"):  # leftovers of a killed write
        for tmp in dst.glob(f".{name}*.tmp"):
            tmp.unlink()
    manifest = dst / "manifest.json"
    if not manifest.exists():
        return
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        assert isinstance(files, list) and all(isinstance(f, str) for f in files)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise UserError(f"{manifest} is not a split manifest; refusing to guess what --force "
                        f"may delete, move the folder away instead") from None
    dirs = set()
    for rel in files:
        if archive.unsafe_reason(rel) is None and (dst / rel).is_file():
            (dst / rel).unlink()
            dirs.update(p for p in Path(rel).parents if str(p) != ".")
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty: something of the user's is in it
            (dst / d).rmdir()
    manifest.unlink(missing_ok=True)


def _check_dst(dst: Path, force: bool) -> None:
    if dst.exists() and not dst.is_dir():
        raise UserError(f"--dst {dst} exists and is not a folder")
    if dst.exists() and any(dst.iterdir()) and not force:
        raise UserError(f"--dst {dst} is not empty; pass --force to replace an earlier split "
                        f"there (it deletes only the files that split wrote)")


def _place(src_file: Path, out: Path, link: bool) -> bool:
    """Hard-link when asked and possible (True), else copy (False)."""
    if link:
        try:
            os.link(src_file, out)
            return True
        except OSError:
            pass
    shutil.copyfile(src_file, out)
    return False


def split_dataset(src, dst, classes=None, num_classes=None, eval_ratio=0.2, seed=0, link=False,
                  force=False, progress=True, source_name: str | None = None) -> dict:
    """Split ``src`` into ``dst`` (see module docstring) and return the manifest written.

    ``classes``: source folder names to use (default: the 16 reference classes when ``src``
    is Caltech101, else every class folder); ``num_classes``: the N largest instead.
    ``source_name`` replaces the path recorded as ``source`` (the demo's temp folder).
    Raises UserError for anything the user can fix; an empty class folder is skipped with a
    note on stderr unless it was named.
    """
    src, dst = Path(src), Path(dst)
    if not 0.0 < eval_ratio < 1.0:
        raise UserError(f"--eval-ratio must be between 0 and 1, got {eval_ratio}")
    if not src.exists():
        raise UserError(f"source {src} not found (download Caltech101, or run "
                        f"`python data_tools/split.py --demo` for a generated set)")
    if src.is_dir() and (dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents):
        raise UserError(f"--dst {dst} must not be inside --src {src}")
    _check_dst(dst, force)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".split-extract-", dir=dst.parent) as tmp:
        if src.is_dir():
            root = src
        elif archive.is_archive(src):
            root = archive.extract_image_tree(src, Path(tmp), find_class_root)
        else:
            kinds = "/".join(archive.ARCHIVE_SUFFIXES)
            raise UserError(f"source {src} is neither a folder nor a {kinds} archive")
        found = scan_classes(root)
        if not any(found.values()) and (deeper := find_class_root(root)) is not None:
            raise UserError(f"{src} has no class folders with images; did you mean --src {deeper}?")
        chosen, explicit = _select_classes(found, classes, num_classes)
        stats, skipped = _check_images(root, found, chosen, progress)
        plan, train_stats = _plan(root, found, chosen, explicit, stats, eval_ratio, seed, skipped)
        mean, std = mean_std(train_stats)
        info = {"mean": mean, "std": std, "seed": seed, "eval_ratio": eval_ratio,
                "source": source_name or str(src.resolve()), "skipped": skipped}
        return _write_split(dst, plan, info, link, force, progress)


def _check_images(root: Path, found: dict, chosen: list[str], progress: bool):
    """Decode every candidate: ({(class, file): pixel sums}, [skipped entries])."""
    paths = [(c, f) for c in chosen for f in found[c]]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL frees the GIL
        results = list(tqdm(pool.map(_check_image, [str(root / c / f) for c, f in paths]),
                            total=len(paths), desc="checking", unit="img", disable=not progress))
    stats, skipped = {}, []
    for (c, f), (st, reason) in zip(paths, results):
        if st is None:
            skipped.append({"path": f"{c}/{f}", "reason": reason})
        else:
            stats[(c, f)] = st
    return stats, skipped


def _plan(root: Path, found: dict, chosen: list[str], explicit: bool, stats: dict,
          eval_ratio: float, seed: int, skipped: list) -> tuple[dict, list]:
    """({out class: {"train"/"eval": [(source file, out name)]}}, train pixel sums).

    Appends empty (unnamed) class folders to ``skipped``.
    """
    names = {c: sanitize_name(c) for c in chosen}
    lowered = [n.lower() for n in names.values()]
    clash = [c for c in chosen if lowered.count(names[c].lower()) > 1]
    if clash:
        raise UserError(f"class folders {clash} have the same portable name; rename one")
    plan, train_stats = {}, []
    for c in chosen:
        if not found[c] and not explicit:
            print(f"note: skipping empty class folder {c!r}", file=sys.stderr)
            skipped.append({"path": f"{c}/", "reason": "empty class folder"})
            continue
        usable = [f for f in found[c] if (c, f) in stats]
        if len(usable) < 2:
            raise UserError(f"class {c!r} has {len(usable)} usable image(s); it needs at least 2")
        n_eval = min(max(round(len(usable) * eval_ratio), 1), len(usable) - 1)
        order = list(usable)
        random.Random(f"{seed}/{c}").shuffle(order)  # per class: unaffected by other classes
        to_eval = set(order[:n_eval])
        out = _unique_names(usable)
        plan[names[c]] = {"train": [(root / c / f, out[f]) for f in usable if f not in to_eval],
                          "eval": [(root / c / f, out[f]) for f in usable if f in to_eval]}
        train_stats += [stats[(c, f)] for f in usable if f not in to_eval]
    if not plan:
        raise UserError(f"no class folder in {root} holds images")
    return plan, train_stats


def _write_split(dst: Path, plan: dict, info: dict, link: bool, force: bool,
                 progress: bool) -> dict:
    """Write the planned files, the lists and the manifest (``info`` adds its fields)."""
    classes = sorted(plan)  # DatasetFolder's order, so label == index in both
    lists = {s: [(f"{s}/{c}/{name}", src_file, i) for i, c in enumerate(classes)
                 for src_file, name in plan[c][s]] for s in ("train", "eval")}
    files = [rel for s in ("train", "eval") for rel, _, _ in lists[s]] + [
        "train.txt", "eval.txt", "manifest.json"]
    if force:
        _clear_previous_split(dst)
    taken = [rel for rel in files if (dst / rel).exists()]
    if taken:
        raise UserError(f"{dst / taken[0]} exists and was not written by an earlier split; "
                        f"move it away")
    manifest = {
        "version": MANIFEST_VERSION, "complete": False, "classes": classes,
        "counts": {c: {s: len(plan[c][s]) for s in ("train", "eval")} for c in classes},
        "train": len(lists["train"]), "eval": len(lists["eval"]), **info, "files": files,
    }
    dst.mkdir(parents=True, exist_ok=True)
    # Written first, so that --force can clean up after a split that crashed half way.
    atomic_write_text(dst / "manifest.json", json.dumps(manifest, indent=1))
    for c in classes:
        for s in ("train", "eval"):
            (dst / s / c).mkdir(parents=True, exist_ok=True)
    copied = 0
    for rel, src_file, _ in tqdm(lists["train"] + lists["eval"], unit="img", disable=not progress,
                                 desc="linking" if link else "copying"):
        copied += not _place(src_file, dst / rel, link)
    if link and copied:
        print(f"note: {copied} files could not be hard-linked (another filesystem?) "
              f"and were copied", file=sys.stderr)
    for s in ("train", "eval"):
        atomic_write_text(dst / f"{s}.txt", "".join(f"{rel} {label}\n" for rel, _, label in lists[s]))
    manifest["complete"] = True
    atomic_write_text(dst / "manifest.json", json.dumps(manifest, indent=1))
    return manifest


def format_summary(manifest: dict) -> str:
    """The end-of-split table: class, train, eval, skipped."""
    skipped: dict[str, int] = {}
    for s in manifest["skipped"]:
        c = sanitize_name(s["path"].split("/")[0])
        skipped[c] = skipped.get(c, 0) + 1
    w = max([len(c) for c in manifest["classes"]] + [5])
    rows = [f"{'class':<{w}}  {'train':>6}  {'eval':>6}  {'skipped':>7}"]
    for c in manifest["classes"]:
        n = manifest["counts"][c]
        rows.append(f"{c:<{w}}  {n['train']:>6}  {n['eval']:>6}  {skipped.get(c, 0):>7}")
    rows.append(f"{'total':<{w}}  {manifest['train']:>6}  {manifest['eval']:>6}  "
                f"{len(manifest['skipped']):>7}")
    return "\n".join(rows)


def split_demo(dst=DEMO_DST, seed=0, force=False, progress=True, per_class=60,
               eval_ratio=0.2) -> dict:
    """Generate the procedural demo set (data_tools/demo.py) and split it into ``dst``.

    The generated sources live in a temporary folder next to ``dst`` that is always deleted.
    """
    dst = Path(dst)
    _check_dst(dst, force)  # fail before generating
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".demo-src-", dir=dst.parent) as tmp:
        names = demo.make_demo_images(tmp, per_class=per_class, seed=seed)
        return split_dataset(tmp, dst, classes=names, eval_ratio=eval_ratio, seed=seed,
                             force=force, progress=progress,
                             source_name=f"demo (seed={seed}, per_class={per_class})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--src", help="folder of class folders, or a .tar.gz/.tgz/.tar/.zip "
                   f"holding one (default {DEFAULT_SRC})")
    p.add_argument("--dst", help=f"output folder (default {DEFAULT_DST}; {DEMO_DST} with --demo)")
    p.add_argument("--classes", help="comma-separated class folder names "
                   "(default: the 16 reference classes)")
    p.add_argument("--num-classes", type=int, help="take the N largest classes instead")
    p.add_argument("--eval-ratio", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--link", action="store_true", help="hard-link instead of copying")
    p.add_argument("--force", action="store_true", help="replace an earlier split in DST")
    p.add_argument("--demo", action="store_true", help="generate and split the offline demo set")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.demo:
        if args.src or args.classes or args.num_classes:
            raise UserError("--demo generates its own source; drop --src/--classes/--num-classes")
        manifest = split_demo(args.dst or DEMO_DST, seed=args.seed, force=args.force,
                              eval_ratio=args.eval_ratio)
    else:
        classes = [c.strip() for c in (args.classes or "").split(",") if c.strip()] or None
        manifest = split_dataset(args.src or DEFAULT_SRC, args.dst or DEFAULT_DST, classes=classes,
                                 num_classes=args.num_classes, eval_ratio=args.eval_ratio,
                                 seed=args.seed, link=args.link, force=args.force)
    print(format_summary(manifest))
    return manifest


if __name__ == "__main__":
    exit_on_user_error(main)
