"""Train-time augmentation beyond the reference recipe's rotation and flip.

``Augment`` (a config's ``data.*`` keys) says which pieces are on; :func:`app.data.transforms.build_transform`
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

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

CACHE_MARGIN = 1.25


@dataclass(frozen=True)
class Augment:
    random_resized_crop: bool = False
    crop_scale: tuple = (0.08, 1.0)
    crop_ratio: tuple = (0.75, 4 / 3)
    crop_padding: int = 0
    color_jitter: float = 0.0
    randaugment_n: int = 0
    randaugment_m: int = 9
    random_erasing: float = 0.0
    erasing_area: tuple = (0.02, 0.33)

    @classmethod
    def from_config(cls, data: dict) -> Augment:
        return cls(random_resized_crop=data["random_resized_crop"],
                   crop_scale=tuple(data["crop_scale"]), crop_ratio=tuple(data["crop_ratio"]),
                   crop_padding=data["crop_padding"], color_jitter=data["color_jitter"],
                   randaugment_n=data["randaugment"][0], randaugment_m=data["randaugment"][1],
                   random_erasing=data["random_erasing"],
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


class MixBatch:
    """Mixup / CutMix on a training batch, as the DataLoader's ``collate_fn``.

    Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018; Yun et al.,
    "CutMix", ICCV 2019; the switching scheme of timm's ``Mixup``. With probability ``prob``
    a batch is mixed with its reversed order: CutMix (with probability ``switch_prob`` when
    both are on) pastes a box of the partner image whose area is ``1 - lam``, lam ~
    Beta(cutmix_alpha, cutmix_alpha), and the label weight is the area actually pasted
    (after clipping the box to the image); mixup blends the images with lam ~
    Beta(mixup_alpha, mixup_alpha). Labels become soft targets [N, num_classes] (each row
    sums to 1); unmixed batches get one-hot rows. The training loss is then cross-entropy
    with the soft targets, and the logged train accuracy is agreement with the label of the
    larger weight (paddle's Accuracy takes the argmax of soft labels). Randomness: numpy's
    global generator (seeded by ``seed_everything``).
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 prob: float = 1.0, switch_prob: float = 0.5):
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob

    @classmethod
    def from_config(cls, train: dict, num_classes: int) -> MixBatch | None:
        """The collate of the train section's mixup / CutMix settings; None when both are off."""
        if not (train["mixup_alpha"] or train["cutmix_alpha"]):
            return None
        return cls(num_classes, train["mixup_alpha"], train["cutmix_alpha"], train["mix_prob"],
                   train["mix_switch_prob"])

    def __call__(self, batch):

        images = np.stack([b[0] for b in batch]).astype(np.float32)
        labels = np.concatenate([np.asarray(b[1]).reshape(-1) for b in batch]).astype(np.int64)
        onehot = np.eye(self.num_classes, dtype=np.float32)[labels]
        if np.random.random() >= self.prob or not (self.mixup_alpha or self.cutmix_alpha):
            return images, onehot
        use_cutmix = self.cutmix_alpha and (not self.mixup_alpha or np.random.random() < self.switch_prob)
        partner = images[::-1]
        if use_cutmix:
            lam = np.random.beta(self.cutmix_alpha, self.cutmix_alpha)
            h, w = images.shape[2:]
            cut_h, cut_w = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
            cy, cx = np.random.randint(h), np.random.randint(w)
            y0, y1 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, h)
            x0, x1 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, w)
            images = images.copy()
            images[:, :, y0:y1, x0:x1] = partner[:, :, y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the area actually pasted
        else:
            lam = np.random.beta(self.mixup_alpha, self.mixup_alpha)
            images = lam * images + (1 - lam) * partner
        targets = lam * onehot + (1 - lam) * onehot[::-1]
        return images.astype(np.float32), targets.astype(np.float32)
