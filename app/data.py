"""The image dataset: a split folder (data_tools/split.py) -> normalised float32 CHW arrays.

``ImageFolderDataset(root, "train")`` reads ``root/train/<class>/*`` through paddle's
``DatasetFolder`` and returns ``(float32 [3, S, S], int64 [1])``. Every image is converted to
8-bit RGB first (grayscale, CMYK, alpha, palette, 16-bit; see ``app.images.to_rgb``).
Normalisation uses the split's manifest mean/std, or the reference tutorial's constants
with a warning when there is no manifest.

``cache=True`` decodes and resizes every image once into one uint8 array [N, S, S, 3]
(1817 Caltech images at 256 px: ~360 MB). It is a single numpy buffer, so forked
DataLoader workers share it instead of copying. The random augmentation runs after the
cache, per item, so every epoch still sees fresh rotations and flips.
"""
from __future__ import annotations

import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import paddle
from paddle.vision import transforms as T
from paddle.vision.datasets import DatasetFolder
from PIL import Image
from tqdm import tqdm

from app.augment import Augment, RandAugment
from app.errors import UserError
from app.images import IMAGE_EXTENSIONS, read_rgb

# The reference tutorial's hard-coded statistics, used only when a split has no manifest.
FALLBACK_MEAN = (0.5095, 0.5463, 0.5741)
FALLBACK_STD = (0.2606, 0.2604, 0.2922)
_HINT = "run `python data_tools/split.py --demo` (or --src <Caltech101>) to create a split"


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
    import hashlib

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
    then the pieces of ``augment`` that are on (app/augment.py): RandomResizedCrop in place
    of the Resize, or a padded RandomCrop (CIFAR-style translation) after it; ColorJitter
    and RandAugment after the flip, RandomErasing after normalisation. Eval: Resize. Both scale to [0, 1] and normalise with ``mean``/``std``.
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


def _split_dir(root: Path, split: str) -> Path:
    folder = root / split
    if not folder.is_dir():
        raise UserError(f"no {split} folder at {folder}; {_HINT}")
    if not any(p.is_dir() and any(p.iterdir()) for p in folder.iterdir()):
        raise UserError(f"{folder} holds no class folders with images; {_HINT}")
    return folder


class ImageFolderDataset(paddle.io.Dataset):
    """``root/<split>/<class>/<image>`` as ``(float32 [3, S, S], int64 [1])`` items.

    ``root`` is a split folder (manifest.json, train/, eval/). ``train=None`` augments iff
    ``split == "train"``. ``mean``/``std`` override the manifest's. Labels are indices into
    ``classes`` (sorted folder names), which must equal the manifest's ``classes``.
    ``cache=True`` calls :meth:`preload` at once (see the module docstring).
    """

    def __init__(self, root, split: str = "train", image_size: int = 256, train: bool | None = None,
                 cache: bool = False, rotation: float = 10, hflip: bool = True, mean=None, std=None,
                 num_threads: int | None = None, progress: bool = True,
                 augment: Augment = Augment()):
        super().__init__()
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"data folder {self.root} not found; {_HINT}")
        self.split = split
        self.image_size = image_size
        self.train = (split == "train") if train is None else train
        self.manifest = load_manifest(self.root)
        try:
            self.folder = DatasetFolder(str(_split_dir(self.root, split)), loader=read_rgb,
                                        extensions=IMAGE_EXTENSIONS)
        except RuntimeError:  # DatasetFolder's "Found 0 directories" when no file is an image
            raise UserError(f"no images under {self.root / split}; {_HINT}") from None
        self.mean, self.std = self._stats(mean, std)
        self.classes = list(self.folder.classes)
        self.class_to_idx = dict(self.folder.class_to_idx)
        self.samples = [(p, t) for p, t in self.folder.samples
                        if not os.path.basename(p).startswith(".")]
        self.targets = [t for _, t in self.samples]
        if self.manifest is not None and self.classes != list(self.manifest["classes"]):
            raise UserError(f"classes in {self.root / split} {self.classes} differ from "
                            f"manifest.json {self.manifest['classes']}; "
                            f"re-run the split with --force")
        self.augment = augment
        self.transform = build_transform(image_size, self.mean, self.std, self.train,
                                         rotation, hflip, augment=augment)
        # What runs on a cached (already resized) image.
        self.cached_transform = build_transform(image_size, self.mean, self.std, self.train,
                                                rotation, hflip, resize=False, augment=augment)
        self.cache: np.ndarray | None = None
        if cache:
            self.preload(num_threads=num_threads, progress=progress)

    def _stats(self, mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if mean is not None and std is not None:
            return tuple(mean), tuple(std)
        if self.manifest is not None:
            return tuple(self.manifest["mean"]), tuple(self.manifest["std"])
        warnings.warn(f"{self.root} has no manifest.json; normalising with the reference "
                      f"tutorial's mean/std {FALLBACK_MEAN} / {FALLBACK_STD}", stacklevel=3)
        return FALLBACK_MEAN, FALLBACK_STD


    def preload(self, num_threads: int | None = None, progress: bool = True) -> float:
        """Decode + resize every image into ``self.cache`` (uint8 [N, S, S, 3]); returns MB.

        Threads, because PIL releases the GIL while decoding and resizing. With
        RandomResizedCrop on (training), S is ``augment.cache_size``: 1.25x the image size,
        so the crop has real pixels to take (16 classes at 128 px: 1453 x 160 x 160 x 3 =
        112 MB instead of 71 MB).
        """
        s = self.augment.cache_size(self.image_size) if self.train else self.image_size
        cache = np.empty((len(self.samples), s, s, 3), np.uint8)
        resize = build_resize(s)

        def fill(i: int) -> None:
            cache[i] = np.asarray(resize(read_rgb(self.samples[i][0])))

        with ThreadPoolExecutor(max_workers=num_threads or os.cpu_count() or 1) as pool:
            list(tqdm(pool.map(fill, range(len(self.samples))), total=len(self.samples),
                      desc=f"caching {self.split}", unit="img", disable=not progress))
        self.cache = cache
        return cache.nbytes / 2**20

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.image(index), np.array([self.samples[index][1]], dtype=np.int64)

    def image(self, index: int) -> np.ndarray:
        """Item ``index``'s image as the model sees it (augmented when training)."""
        if self.cache is None:
            return self.transform(read_rgb(self.samples[index][0]))
        img = self.cache[index]
        # Rotation and flip are PIL ops (paddle's numpy path needs OpenCV, not installed).
        return self.cached_transform(Image.fromarray(img) if self.train else img)

    def __len__(self) -> int:
        return len(self.samples)
