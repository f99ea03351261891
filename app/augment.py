"""Train-time augmentation beyond the reference recipe's rotation and flip.

``Augment`` (a config's ``data.*`` keys) says which pieces are on; :func:`app.data.build_transform`
places them. Every piece is off by default, so the reference recipe is unchanged.

- RandomResizedCrop (``paddle.vision.transforms``; scale and ratio ranges) replaces the
  square resize; with the decoded-image cache on, images are cached at ``CACHE_MARGIN``
  times the training size so that the crop has real pixels to take.
- ColorJitter (``paddle.vision.transforms``): brightness, contrast and saturation by
  ``color_jitter``.
- RandAugment (Cubuk et al., 2020; paddle.vision has none): ``N`` operations drawn
  uniformly from PIL's operations below, each at magnitude ``M`` of 10 (signed at random where
  the operation has a direction), as timm's ``rand-mN-nM`` without its magnitude noise.
  Built on ``PIL.ImageOps`` / ``ImageEnhance`` / ``Image.transform``.
- RandomErasing (``paddle.vision.transforms``; probability and area range) on the
  normalised image, erased to 0 = the split's mean colour.

Randomness comes from Python's ``random`` (RandAugment, and paddle's transforms) and numpy's
global generator (some of paddle's transforms), both seeded by ``seed_everything``, so runs
stay reproducible.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageEnhance, ImageOps

CACHE_MARGIN = 1.25


@dataclass(frozen=True)
class Augment:
    random_resized_crop: bool = False
    crop_scale: tuple = (0.08, 1.0)
    crop_ratio: tuple = (0.75, 4 / 3)
    color_jitter: float = 0.0
    randaugment_n: int = 0
    randaugment_m: int = 9
    random_erasing: float = 0.0
    erasing_area: tuple = (0.02, 0.33)

    @classmethod
    def from_config(cls, data: dict) -> "Augment":
        return cls(random_resized_crop=data["random_resized_crop"],
                   crop_scale=tuple(data["crop_scale"]), crop_ratio=tuple(data["crop_ratio"]),
                   color_jitter=data["color_jitter"], randaugment_n=data["randaugment"][0],
                   randaugment_m=data["randaugment"][1], random_erasing=data["random_erasing"],
                   erasing_area=tuple(data["erasing_area"]))

    def cache_size(self, image_size: int) -> int:
        """The side at which the decoded-image cache keeps images for this augmentation."""
        return round(image_size * CACHE_MARGIN) if self.random_resized_crop else image_size


def _level(m: int, top: float) -> float:
    return top * m / 10.0


def _signed(value: float) -> float:
    return value if random.random() < 0.5 else -value


def _shear(img, m, axis):
    s = _signed(_level(m, 0.3))
    matrix = (1, s, 0, 0, 1, 0) if axis == 0 else (1, 0, 0, s, 1, 0)
    return img.transform(img.size, Image.AFFINE, matrix, fillcolor=(128, 128, 128))


def _translate(img, m, axis):
    t = _signed(_level(m, 0.45)) * img.size[axis]
    matrix = (1, 0, t, 0, 1, 0) if axis == 0 else (1, 0, 0, 0, 1, t)
    return img.transform(img.size, Image.AFFINE, matrix, fillcolor=(128, 128, 128))


# name -> (PIL image, magnitude 0..10) -> PIL image; the set of timm's rand augment.
RAND_OPS = {
    "AutoContrast": lambda img, m: ImageOps.autocontrast(img),
    "Equalize": lambda img, m: ImageOps.equalize(img),
    "Invert": lambda img, m: ImageOps.invert(img),
    "Rotate": lambda img, m: img.rotate(_signed(_level(m, 30)), fillcolor=(128, 128, 128)),
    "Posterize": lambda img, m: ImageOps.posterize(img, max(1, 8 - int(_level(m, 4)))),
    "Solarize": lambda img, m: ImageOps.solarize(img, 256 - int(_level(m, 256))),
    "SolarizeAdd": lambda img, m: ImageOps.solarize(Image.eval(img, lambda v: min(255, v + int(_level(m, 110)))), 128),
    "Color": lambda img, m: ImageEnhance.Color(img).enhance(1 + _signed(_level(m, 0.9))),
    "Contrast": lambda img, m: ImageEnhance.Contrast(img).enhance(1 + _signed(_level(m, 0.9))),
    "Brightness": lambda img, m: ImageEnhance.Brightness(img).enhance(1 + _signed(_level(m, 0.9))),
    "Sharpness": lambda img, m: ImageEnhance.Sharpness(img).enhance(1 + _signed(_level(m, 0.9))),
    "ShearX": lambda img, m: _shear(img, m, 0),
    "ShearY": lambda img, m: _shear(img, m, 1),
    "TranslateX": lambda img, m: _translate(img, m, 0),
    "TranslateY": lambda img, m: _translate(img, m, 1),
}


class RandAugment:
    """``n`` random operations of :data:`RAND_OPS` at magnitude ``m`` (0-10) on an RGB PIL image."""

    def __init__(self, n: int, m: int):
        self.n, self.m = n, m

    def __call__(self, img: Image.Image) -> Image.Image:
        for name in random.choices(list(RAND_OPS), k=self.n):
            img = RAND_OPS[name](img, self.m)
        return img
