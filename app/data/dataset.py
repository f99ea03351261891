"""The image dataset: a split folder (data_tools/split.py) -> normalised float32 CHW arrays.

``ImageFolderDataset(root, "train")`` reads ``root/train/<class>/*`` through paddle's
``DatasetFolder`` and returns ``(float32 [3, S, S], int64 [1])``. Every image is converted to
8-bit RGB first (grayscale, CMYK, alpha, palette, 16-bit; see ``app.data.images.to_rgb``).
Normalisation uses the split's manifest mean/std, or the reference tutorial's constants
with a warning when there is no manifest.

``cache=True`` decodes and resizes every image once into one uint8 array [N, S, S, 3]
(1817 Caltech images at 256 px: ~360 MB). It is a single numpy buffer, so forked
DataLoader workers share it instead of copying. The random augmentation runs after the
cache, per item, so every epoch still sees fresh rotations and flips. A run's datasets are
cached as ``data.cache`` says (:func:`cache_when_fits`): by default (``auto``) only when
the decoded images fit a memory budget, so a large folder is streamed, never a reason for
an out-of-memory kill.
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


    def cache_side(self) -> int:
        """The side at which :meth:`preload` keeps images (larger for RandomResizedCrop)."""
        return self.augment.cache_size(self.image_size) if self.train else self.image_size

    def cache_bytes(self) -> int:
        """The memory :meth:`preload` takes: N x S x S x 3 bytes."""
        return len(self.samples) * self.cache_side() ** 2 * 3

    def preload(self, num_threads: int | None = None, progress: bool = True) -> float:
        """Decode + resize every image into ``self.cache`` (uint8 [N, S, S, 3]); returns MB.

        Threads, because PIL releases the GIL while decoding and resizing. With
        RandomResizedCrop on (training), S is ``augment.cache_size``: 1.25x the image size,
        so the crop has real pixels to take (16 classes at 128 px: 1453 x 160 x 160 x 3 =
        112 MB instead of 71 MB).
        """
        s = self.cache_side()
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
    """The training split as the config's ``data`` section augments it, cached as
    ``data.cache`` says (:func:`cache_when_fits`); ``stats`` ({"mean", "std"}) normalise
    instead of the split's own (ImageNet weights)."""
    train = _train_split(data, root, stats, progress)
    cache_when_fits(data, [train], progress)
    return train


def train_and_eval(data: dict, stats: dict | None = None) -> tuple:
    """(train, eval) datasets of the ``data`` section; eval normalised as train is; both
    cached as ``data.cache`` says (:func:`cache_when_fits`)."""
    train = _train_split(data, None, stats, True)
    evaluation = ImageFolderDataset(data["root"], "eval", train=False, mean=train.mean,
                                    std=train.std, image_size=data["image_size"])
    if evaluation.classes != train.classes:
        raise UserError(f"{data['root']}: train and eval class folders differ")
    cache_when_fits(data, [train, evaluation])
    return train, evaluation


def _train_split(data: dict, root, stats: dict | None, progress: bool) -> ImageFolderDataset:
    return ImageFolderDataset(root or data["root"], "train", image_size=data["image_size"],
                              rotation=data["rotation"], hflip=data["hflip"],
                              augment=Augment.from_config(data), progress=progress, **(stats or {}))


def cache_when_fits(data: dict, datasets: list, progress: bool = True) -> bool:
    """Decode ``datasets`` into memory (:meth:`ImageFolderDataset.preload`) as ``data.cache``
    says: ``true`` always (refused in one line when it cannot fit the memory available),
    ``false`` never, ``auto`` when the decoded images fit ``data.cache_max_mb`` (0: half the
    memory available now), else they are decoded every epoch, said in one line. Returns
    whether they were cached."""
    setting, need = data["cache"], sum(ds.cache_bytes() for ds in datasets)
    if setting is False:
        return False
    available = available_memory()
    if setting is True:
        if available is not None and need > 0.9 * available:
            raise UserError(f"data.cache=true: the decoded images would take "
                            f"{need / 2**20:,.0f} MB of the {available / 2**20:,.0f} MB of memory "
                            f"available; use data.cache=auto or false")
    else:
        budget = data["cache_max_mb"] * 2**20 if data["cache_max_mb"] else (
            available // 2 if available is not None else None)
        if budget is not None and need > budget:
            source = ("data.cache_max_mb" if data["cache_max_mb"] else
                      "half the memory available; data.cache_max_mb sets it")
            print(f"data.cache=auto: decoding the images every epoch: cached, they would take "
                  f"{need / 2**20:,.0f} MB, over the {budget / 2**20:,.0f} MB budget ({source})",
                  flush=True)
            return False
    for ds in datasets:
        ds.preload(progress=progress)
    return True


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (Linux: MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
