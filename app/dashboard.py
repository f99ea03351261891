"""What a run shows in VisualDL beyond scalars: its hparams record and its images.

The callback that writes them is ``app.callbacks.VisualDLLogger``; this module builds the
values. VisualDL 2.5.3 takes hparams of type int, float or str only (a bool raises TypeError,
a numpy scalar is dropped without a word), so every value here is a plain Python one.
"""
from __future__ import annotations

import random

import numpy as np

from app.gradcam import pick_images
from models import nchw_twin

ATTENTION_IMAGES = 8  # the same eval images for every run of a split (pick_images, seed 0)
TRAIN_SAMPLES = 16
ATTENTION_LAYERS = 6  # at most, evenly spread: a 17-layer MobileNetV2 grid is unreadable


def model_parts(name: str) -> tuple[str, str]:
    """(host, attention) of a registered model name: ``mobilenet_v2_ca`` -> (mobilenet_v2, ca)."""
    from models.attention import list_attentions

    for att in sorted(list_attentions(), key=len, reverse=True):
        if name.endswith(f"_{att}"):
            return name[: -len(att) - 1], att
    return name, "none"


def hparams(cfg: dict, params: int, gmacs: float) -> dict:
    """The run's HParams record; keys ``metric:*`` are logged as constant scalars instead."""
    host, attention = model_parts(cfg["model"]["name"])
    t, o, d = cfg["train"], cfg["optimizer"], cfg["data"]
    return {
        "model": str(cfg["model"]["name"]), "host": host, "attention": attention,
        "recipe": str(t["recipe"]),
        "seed": int(t["seed"]), "lr": float(o["lr"]), "epochs": int(t["epochs"]),
        "batch_size": int(t["batch_size"]), "image_size": int(d["image_size"]),
        "weight_decay": float(o["weight_decay"]),
        "nesterov": str(bool(o["nesterov"])).lower(),
        "no_decay_norm_bias": str(bool(o["no_decay_norm_bias"])).lower(),
        "sam_rho": float(o["sam_rho"]),
        "pretrained": str(cfg["model"]["pretrained"] or "none"),
        "metric:params": int(params), "metric:gmacs": float(gmacs),
    }


def _tile(images: list, cols: int) -> np.ndarray:
    """uint8 HWC images of one size -> one grid image with a 2-pixel white gutter."""
    h, w, _ = images[0].shape
    rows = -(-len(images) // cols)
    grid = np.full((rows * (h + 2) + 2, cols * (w + 2) + 2, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[2 + r * (h + 2): 2 + r * (h + 2) + h, 2 + c * (w + 2): 2 + c * (w + 2) + w] = img
    return grid


class RunImages:
    """Builds a run's VisualDL images from its datasets and network."""

    def __init__(self, network, train_ds, eval_ds, attention_every: int, epochs: int, seed: int):
        self.network, self.train_ds, self.eval_ds = network, train_ds, eval_ds
        self.attention_every, self.epochs, self.seed = attention_every, epochs, seed
        self.classes = list(eval_ds.classes)
        picked = pick_images(eval_ds.samples, self.classes, ATTENTION_IMAGES, seed=0)
        index = {p: i for i, (p, _) in enumerate(eval_ds.samples)}
        self.attention_indices = [index[p] for p, _ in picked]

    def train_grid(self) -> np.ndarray:
        """16 training samples after augmentation and normalisation, mapped back to RGB.

        The augmentations draw from Python's and numpy's global generators, which are put
        back afterwards: logging the grid does not change what the run trains on.
        """
        rng = np.random.default_rng(self.seed)
        idx = rng.choice(len(self.train_ds), size=min(TRAIN_SAMPLES, len(self.train_ds)),
                         replace=False)
        mean = np.asarray(self.train_ds.mean, np.float32)[:, None, None]
        std = np.asarray(self.train_ds.std, np.float32)[:, None, None]
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            images = [((self.train_ds.image(int(i)) * std + mean).clip(0, 1) * 255)
                      .astype(np.uint8).transpose(1, 2, 0) for i in idx]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        return _tile(images, 4)

    def confusion(self, matrix: np.ndarray) -> np.ndarray:
        from app import report

        return report.confusion_image(matrix, self.classes)

    def attention_due(self, epoch: int) -> bool:
        return bool(self.attention_every) and (epoch % self.attention_every == 0
                                               or epoch == self.epochs)

    def attention(self) -> np.ndarray | None:
        """The attention-map grid of the fixed eval images, or None without attention."""
        from app.attention_maps import attention_grid

        was_training = self.network.training
        try:  # the maps are read off NCHW feature maps: a channels-last network's NCHW twin
            return attention_grid(nchw_twin(self.network), self.eval_ds, self.attention_indices,
                                  self.classes, max_layers=ATTENTION_LAYERS)[1]
        finally:
            self.network.train(was_training)
