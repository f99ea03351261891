"""Reading images: any file PIL decodes -> 8-bit RGB, upright.

The one place image files are opened and converted, used by the dataset (``app.data``), the
figures and prediction (``app.inspect``) and the split CLI
(``data_tools/split.py``). Importing it does not import paddle.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# What paddle.vision.datasets.DatasetFolder reads; anything else in a class folder is ignored.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_EXIF_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                     4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                     6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                     8: Image.Transpose.ROTATE_90}


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB, upright.

    Transparent pixels (RGBA, LA, PA, P or L/RGB with a transparency key) are composited on
    white, the way a viewer shows them, rather than exposing whatever colour hides under
    alpha 0. 16-bit and 32-bit integer images (I;16*, I) are scaled by 255/65535, not
    clipped; float (F) images are taken as [0, 1] when their maximum is <= 1. CMYK, YCbCr,
    1-bit, L and palette go through PIL's convert. EXIF orientation is applied.
    """
    orientation = _EXIF_ORIENTATION.get(img.getexif().get(0x0112))
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        a = np.asarray(img).astype(np.float64)
        scale = 255.0 if mode == "F" and a.size and a.max() <= 1.0 else 255.0 / 65535.0
        img = Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8), "L")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img.transpose(orientation) if orientation else img


def read_rgb(path: str | Path) -> Image.Image:
    """Fully decode ``path`` as 8-bit RGB (see :func:`to_rgb`).

    Raises what PIL raises for a file it cannot decode completely (truncated, corrupt, empty):
    OSError, SyntaxError, ValueError, Image.DecompressionBombError among others.
    """
    with Image.open(path) as img:
        img.load()
        return to_rgb(img)


def pixel_sums(path) -> np.ndarray:
    """[sum R, G, B, sum of squares R, G, B, pixel count] of an image as exact int64 (8-bit
    values), for a split's mean/std. Raises what :func:`read_rgb` raises."""
    a = np.asarray(read_rgb(path)).reshape(-1, 3)
    sq = a.astype(np.uint16)  # 255**2 fits in uint16; sums are exact in int64
    return np.concatenate([a.sum(0, dtype=np.int64), (sq * sq).sum(0, dtype=np.int64),
                           [a.shape[0]]])


def mean_std(sums) -> tuple[list[float], list[float]]:
    """Per-channel mean and population std (ddof=0) of RGB/255 over :func:`pixel_sums` results."""
    total = np.sum(sums, axis=0)
    n = float(total[6])
    mean = total[0:3] / (255.0 * n)
    var = total[3:6] / (255.0 ** 2 * n) - mean ** 2
    return [float(m) for m in mean], [float(s) for s in np.sqrt(np.maximum(var, 0.0))]
