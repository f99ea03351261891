"""The image dataset: a split folder (data_tools/split.py) -> normalised float32 CHW arrays.

``ImageFolderDataset(root, "train")`` reads ``root/train/<class>/*`` through paddle's
``DatasetFolder`` and returns ``(float32 [3, S, S], int64 [1])``. Every image is converted to
8-bit RGB first (grayscale, CMYK, alpha, palette, 16-bit; see ``app.data.images.to_rgb``).
Normalisation uses the split's manifest mean/std, or the reference tutorial's constants
with a warning when there is no manifest.

``cache=True`` decodes and resizes every image once into one uint8 array [N, S, S, 3]
(1817 Caltech images at 256 px: ~360 MB). It is a single numpy buffer, so forked
DataLoader workers share it instead of copying. The random augmentation runs after the
cache, per item, so every epoch still sees fresh rotations and flips.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import paddle
from paddle.vision.datasets import DatasetFolder
from PIL import Image
from tqdm import tqdm

from app.data.augment import Augment
from app.data.images import IMAGE_EXTENSIONS, read_rgb
from app.data.split import SPLIT_HINT, load_manifest
from app.data.transforms import build_resize, build_transform
from app.util.errors import UserError

# The reference tutorial's hard-coded statistics, used only when a split has no manifest.
FALLBACK_MEAN = (0.5095, 0.5463, 0.5741)
FALLBACK_STD = (0.2606, 0.2604, 0.2922)


def _split_dir(root: Path, split: str) -> Path:
    folder = root / split
    if not folder.is_dir():
        raise UserError(f"no {split} folder at {folder}; {SPLIT_HINT}")
    if not any(p.is_dir() and any(p.iterdir()) for p in folder.iterdir()):
        raise UserError(f"{folder} holds no class folders with images; {SPLIT_HINT}")
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
            raise UserError(f"data folder {self.root} not found; {SPLIT_HINT}")
        self.split = split
        self.image_size = image_size
        self.train = (split == "train") if train is None else train
        self.manifest = load_manifest(self.root)
        try:
            self.folder = DatasetFolder(str(_split_dir(self.root, split)), loader=read_rgb,
                                        extensions=IMAGE_EXTENSIONS)
        except RuntimeError:  # DatasetFolder's "Found 0 directories" when no file is an image
            raise UserError(f"no images under {self.root / split}; {SPLIT_HINT}") from None
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


def train_dataset(data: dict, root=None, stats: dict | None = None,
                  progress: bool = True) -> ImageFolderDataset:
    """The training split as the config's ``data`` section augments it; ``stats``
    ({"mean", "std"}) normalise instead of the split's own (ImageNet weights)."""
    return ImageFolderDataset(root or data["root"], "train", image_size=data["image_size"],
                              cache=data["cache"], rotation=data["rotation"], hflip=data["hflip"],
                              augment=Augment.from_config(data), progress=progress, **(stats or {}))


def train_and_eval(data: dict, stats: dict | None = None) -> tuple:
    """(train, eval) datasets of the ``data`` section; eval normalised as train is."""
    train = train_dataset(data, stats=stats)
    evaluation = ImageFolderDataset(data["root"], "eval", train=False, mean=train.mean,
                                    std=train.std, image_size=data["image_size"], cache=data["cache"])
    if evaluation.classes != train.classes:
        raise UserError(f"{data['root']}: train and eval class folders differ")
    return train, evaluation
