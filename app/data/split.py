"""A split folder, as data_tools/split.py writes it: train/<class>/, eval/<class>/ and
manifest.json (classes, counts, files, mean/std). Here: reading its manifest, and telling
whether a folder holds the split a run was trained on (its fingerprint).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from app.util.errors import UserError

SPLIT_HINT = "run `python data_tools/split.py --demo` (or --src <Caltech101>) to create a split"


def load_manifest(root: str | Path) -> dict | None:
    """``root/manifest.json`` as a dict, or None when the split has none.

    Raises UserError when the file is unreadable or marks a split that did not finish.
    """
    path = Path(root) / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if not manifest.get("complete", True):
        raise UserError(f"{path} belongs to a split that did not finish; rerun it with --force")
    return manifest


def split_fingerprint(root) -> str | None:
    """SHA-256 of what a split holds -- its classes, counts and files (manifest.json), not
    where it lives -- or None for a folder without a manifest."""
    manifest = load_manifest(root)
    if manifest is None:
        return None
    content = {k: manifest.get(k) for k in ("classes", "counts", "files")}
    if isinstance(content["files"], list):
        content["files"] = sorted(map(str, content["files"]))
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def split_mismatch(root, recorded: str) -> str | None:
    """Why the folder ``root`` is not the split fingerprinted ``recorded`` ("does not exist",
    "has no manifest.json to tell", "holds another split ..."), or None when it is."""
    current = split_fingerprint(root)
    if current == recorded:
        return None
    if current:
        return "holds another split (its classes, counts or files differ)"
    return "has no manifest.json to tell" if Path(root).is_dir() else "does not exist"
