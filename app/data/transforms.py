"""The one place image transforms are built: RGB PIL image -> normalised float32 [3, S, S]."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from paddle.vision import transforms as T

from app.data.augment import Augment, RandAugment


class ToCHW:
    """HWC uint8 (PIL or numpy) -> CHW float32, scaled to [0, 1] and normalised per channel."""

    def __init__(self, mean, std):
        std = np.asarray(std, np.float32)
        # (x / 255 - mean) / std as one multiply-add per pixel, per channel of CHW.
        self.scale = (1.0 / (255.0 * std)).astype(np.float32)[:, None, None]
        self.shift = (-np.asarray(mean, np.float32) / std).astype(np.float32)[:, None, None]

    def __call__(self, img) -> np.ndarray:
        u = np.asarray(img).transpose(2, 0, 1)  # uint8 CHW view; the float32 pass writes CHW
        x = np.multiply(u, self.scale, dtype=np.float32, order="C")
        x += self.shift
        if self.erase is not None:  # on the normalised HWC image: erased pixels = the mean colour
            x = np.ascontiguousarray(self.erase(x.transpose(1, 2, 0)).transpose(2, 0, 1))
        return x

    erase = None


def build_resize(image_size: int) -> Callable:
    """Resize to a square (S, S), bilinear, ignoring aspect ratio, so that any batch collates."""
    return T.Resize((image_size, image_size))


def build_transform(image_size: int, mean, std, train: bool, rotation: float = 10,
                    hflip: bool = True, resize: bool = True, augment: Augment = Augment()) -> Callable:
    """The one place transforms are built: RGB PIL image -> float32 [3, S, S].

    Train: Resize -> RandomRotation(rotation) -> RandomHorizontalFlip (reference order),
    then the pieces of ``augment`` that are on (app/data/augment.py): RandomResizedCrop in place
    of the Resize, or a padded RandomCrop (CIFAR-style translation) after it; ColorJitter
    and RandAugment after the flip, RandomErasing after normalisation. Eval: Resize. Both
    scale to [0, 1] and normalise with ``mean``/``std``.
    Resize is :func:`build_resize` (square, so batches collate). ``resize=False`` leaves it
    out, for images that are already S x S (the cache). Rotation fills the corners with
    black, as paddle's default does.
    """
    crop = train and augment.random_resized_crop
    if crop:  # from the original or the (larger) cached image, always to S x S
        steps = [T.RandomResizedCrop(image_size, scale=augment.crop_scale, ratio=augment.crop_ratio)]
    else:
        steps = [build_resize(image_size)] if resize else []
    normalise = ToCHW(mean, std)
    if train:
        if augment.crop_padding and not crop:  # a random S x S window of the zero-padded image
            steps.append(T.RandomCrop(image_size, padding=augment.crop_padding))
        if rotation:
            steps.append(T.RandomRotation(rotation))
        if hflip:
            steps.append(T.RandomHorizontalFlip())
        if augment.color_jitter:
            j = augment.color_jitter
            steps.append(T.ColorJitter(brightness=j, contrast=j, saturation=j))
        if augment.randaugment_n:
            steps.append(RandAugment(augment.randaugment_n, augment.randaugment_m))
        if augment.random_erasing:
            normalise.erase = T.RandomErasing(prob=augment.random_erasing,
                                              scale=augment.erasing_area, value=0)
    steps.append(normalise)
    return T.Compose(steps)
