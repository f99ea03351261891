"""Small generated images for the data tests (nothing from ../shared)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def random_image(seed: int, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> Image.Image:
    """A noisy image of ``size`` (w, h) in ``mode``, different for every seed."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    a = np.clip(base + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(a, "RGB")
    return img if mode == "RGB" else img.convert(mode)


def write_image(path: str | Path, seed: int = 0, size: tuple[int, int] = (40, 30),
                mode: str = "RGB") -> Path:
    """Save a random image at ``path`` (format from the suffix); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    random_image(seed, size, mode).save(path)
    return path


def make_tree(root: str | Path, counts: dict[str, int], ext: str = ".jpg") -> Path:
    """``root/<class>/img_NNN<ext>`` with counts[class] images each; returns root."""
    root = Path(root)
    seed = 0
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            seed += 1
            size = (30 + seed % 17, 24 + seed % 11)
            write_image(root / cls / f"img_{i:03d}{ext}", seed, size=size)
    return root


def tree_bytes(root: str | Path) -> dict[str, bytes]:
    """{relative posix path: bytes} of every file under ``root``."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}
