"""A procedural 16-class image set, so the app runs on a machine with nothing but the repo.

Each class is one shape drawn with one texture in one of 8 base hues. Two classes share each
hue and the hue is jittered, so colour alone gets at most about half right: a model has to
look at shape and texture. Position, scale, rotation, aspect ratio, background and clutter
are random per image. Everything is a pure function of ``seed`` (one generator per image),
so two runs write byte-identical JPEGs.
"""
from __future__ import annotations

import colorsys
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# (class name == shape, texture, base hue index 0..7). A hue is shared by two classes with
# different shapes and textures.
CLASS_SPECS: list[tuple[str, str, int]] = [
    ("circle", "solid", 0), ("square", "stripes", 1), ("triangle", "dots", 2),
    ("star", "checker", 3), ("cross", "grid", 4), ("ring", "rings", 5),
    ("hexagon", "speckle", 6), ("crescent", "gradient", 7), ("pentagon", "checker", 0),
    ("arrow", "dots", 1), ("ellipse", "grid", 2), ("trapezoid", "solid", 3),
    ("heart", "stripes", 4), ("semicircle", "speckle", 5), ("lshape", "rings", 6),
    ("bolt", "stripes", 7),
]
MAX_CLASSES = len(CLASS_SPECS)


def _regular(n: int, r: float = 0.45, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(0.5 + r * math.cos(phase + 2 * math.pi * k / n),
             0.5 + r * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]


def _star(points: int = 5) -> list[tuple[float, float]]:
    out = []
    for k in range(2 * points):
        r = 0.47 if k % 2 == 0 else 0.2
        a = -math.pi / 2 + math.pi * k / points
        out.append((0.5 + r * math.cos(a), 0.5 + r * math.sin(a)))
    return out


# Polygons in unit coordinates; shapes not listed here are drawn in _shape_mask.
_POLYGONS = {
    "square": [(0.1, 0.1), (0.9, 0.1), (0.9, 0.9), (0.1, 0.9)],
    "triangle": _regular(3, 0.5, -math.pi / 2),
    "pentagon": _regular(5),
    "hexagon": _regular(6),
    "star": _star(),
    "cross": [(0.35, 0.05), (0.65, 0.05), (0.65, 0.35), (0.95, 0.35), (0.95, 0.65), (0.65, 0.65),
              (0.65, 0.95), (0.35, 0.95), (0.35, 0.65), (0.05, 0.65), (0.05, 0.35), (0.35, 0.35)],
    "arrow": [(0.05, 0.38), (0.55, 0.38), (0.55, 0.15), (0.95, 0.5), (0.55, 0.85), (0.55, 0.62),
              (0.05, 0.62)],
    "trapezoid": [(0.3, 0.2), (0.7, 0.2), (0.95, 0.8), (0.05, 0.8)],
    "lshape": [(0.1, 0.05), (0.4, 0.05), (0.4, 0.65), (0.9, 0.65), (0.9, 0.95), (0.1, 0.95)],
    "bolt": [(0.55, 0.02), (0.2, 0.55), (0.45, 0.55), (0.3, 0.98), (0.8, 0.4), (0.55, 0.4),
             (0.75, 0.02)],
}


def _shape_mask(shape: str, s: int) -> Image.Image:
    """An s x s L-mode mask, 255 inside the shape."""
    mask = Image.new("L", (s, s), 0)
    d = ImageDraw.Draw(mask)
    if shape in _POLYGONS:
        d.polygon([(x * s, y * s) for x, y in _POLYGONS[shape]], fill=255)
    elif shape == "circle":
        d.ellipse([0.05 * s, 0.05 * s, 0.95 * s, 0.95 * s], fill=255)
    elif shape == "ellipse":
        d.ellipse([0.02 * s, 0.28 * s, 0.98 * s, 0.72 * s], fill=255)
    elif shape == "ring":
        d.ellipse([0.05 * s, 0.05 * s, 0.95 * s, 0.95 * s], fill=255)
        d.ellipse([0.3 * s, 0.3 * s, 0.7 * s, 0.7 * s], fill=0)
    elif shape == "crescent":
        d.ellipse([0.05 * s, 0.05 * s, 0.95 * s, 0.95 * s], fill=255)
        d.ellipse([0.3 * s, -0.05 * s, 1.1 * s, 0.75 * s], fill=0)
    elif shape == "semicircle":
        d.pieslice([0.05 * s, 0.25 * s, 0.95 * s, 1.15 * s], 180, 360, fill=255)
    elif shape == "heart":
        d.ellipse([0.05 * s, 0.1 * s, 0.52 * s, 0.57 * s], fill=255)
        d.ellipse([0.48 * s, 0.1 * s, 0.95 * s, 0.57 * s], fill=255)
        d.polygon([(0.08 * s, 0.42 * s), (0.92 * s, 0.42 * s), (0.5 * s, 0.95 * s)], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return mask


def _texture(kind: str, s: int, colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An s x s x 3 float array in [0, 255] filled with pattern ``kind`` in ``colour``."""
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    period = rng.uniform(0.12, 0.22)
    phase = rng.uniform(0, 1)
    dark = colour * 0.35
    if kind == "solid":
        t = np.zeros((s, s), np.float32)
    elif kind == "stripes":
        t = (np.sin(2 * np.pi * (xx / period + phase)) > 0).astype(np.float32)
    elif kind == "checker":
        t = ((np.floor(xx / period + phase) + np.floor(yy / period + phase)) % 2).astype(np.float32)
    elif kind == "dots":
        fx = (xx / period + phase) % 1 - 0.5
        fy = (yy / period + phase) % 1 - 0.5
        t = (fx * fx + fy * fy < 0.08).astype(np.float32)
    elif kind == "grid":
        fx = (xx / period + phase) % 1
        fy = (yy / period + phase) % 1
        t = ((fx < 0.2) | (fy < 0.2)).astype(np.float32)
    elif kind == "rings":
        r = np.hypot(xx - 0.5, yy - 0.5)
        t = (np.sin(2 * np.pi * r / (period * 0.8)) > 0).astype(np.float32)
    elif kind == "gradient":
        t = np.clip(xx * 1.2 - 0.1, 0, 1)
    elif kind == "speckle":
        t = (rng.random((s, s)) < 0.35).astype(np.float32)
    else:
        raise ValueError(f"unknown texture {kind!r}")
    return colour * (1 - t[..., None]) + dark * t[..., None]


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32) * 255


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A low-saturation gradient plus small untextured clutter the model must learn to ignore."""
    a = _hsv(rng.random(), rng.uniform(0, 0.35), rng.uniform(0.3, 0.95))
    b = _hsv(rng.random(), rng.uniform(0, 0.35), rng.uniform(0.3, 0.95))
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    bg = Image.fromarray(np.broadcast_to(a * (1 - ramp) + b * ramp, (h, w, 3)).astype(np.uint8))
    d = ImageDraw.Draw(bg)
    m = min(w, h)
    for _ in range(int(rng.integers(6, 15))):
        fill = tuple(int(c) for c in _hsv(rng.random(), rng.uniform(0.2, 1), rng.uniform(0.2, 1)))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.02, 0.1) * m
        kind = rng.integers(3)
        if kind == 0:
            d.line([x, y, x + rng.uniform(-0.4, 0.4) * m, y + rng.uniform(-0.4, 0.4) * m],
                   fill=fill, width=int(rng.integers(1, 4)))
        elif kind == 1:
            d.ellipse([x - r, y - r, x + r, y + r], fill=fill)
        else:
            d.rectangle([x - r, y - r * 0.6, x + r, y + r * 0.6], fill=fill)
    return bg


def draw_demo_image(class_index: int, rng: np.random.Generator,
                    size_range: tuple[int, int] = (128, 256)) -> Image.Image:
    """One RGB image of class ``class_index`` (see CLASS_SPECS), random everything else."""
    shape, texture, hue_index = CLASS_SPECS[class_index]
    w, h = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
    img = _background(rng, w, h)
    s = max(16, int(rng.uniform(0.4, 0.75) * min(w, h)))
    hue = hue_index / 8 + rng.uniform(-0.04, 0.04)
    colour = _hsv(hue, rng.uniform(0.55, 1), rng.uniform(0.65, 1))
    obj = Image.fromarray(_texture(texture, s, colour, rng).astype(np.uint8))
    obj.putalpha(_shape_mask(shape, s))
    # Mild anisotropic stretch before rotating, so the shape is not a fixed template.
    obj = obj.resize((s, max(8, int(s * rng.uniform(0.8, 1.2)))), Image.BILINEAR)
    obj = obj.rotate(rng.uniform(0, 360), resample=Image.BILINEAR, expand=True)
    x = int(rng.integers(0, max(1, w - obj.width + 1)))
    y = int(rng.integers(0, max(1, h - obj.height + 1)))
    img.paste(obj, (x, y), obj)
    noise = rng.normal(0, 6, (h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8))


def make_demo_images(out_dir: str | Path, num_classes: int = 16, per_class: int = 60,
                     seed: int = 0, size_range: tuple[int, int] = (128, 256)) -> list[str]:
    """Write ``out_dir/<class>/<class>_NNNN.jpg`` and return the class names written.

    ``out_dir`` is created if needed; existing files with the same names are overwritten, so
    point it at a fresh folder. Output depends only on the arguments.
    """
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in 1..{MAX_CLASSES}, got {num_classes}")
    out_dir = Path(out_dir)
    names = []
    for c in range(num_classes):
        name = CLASS_SPECS[c][0]
        (out_dir / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            # One generator per image: output does not depend on loop order or class subset.
            rng = np.random.default_rng([seed, c, i])
            img = draw_demo_image(c, rng, size_range)
            img.save(out_dir / name / f"{name}_{i:04d}.jpg", quality=90)
        names.append(name)
    return names
