"""What a run shows in VisualDL: scalars, its hparams record and its images.

:class:`VisualDLLogger` is the hapi callback that writes them; :func:`hparams` and
:class:`RunImages` build the values. VisualDL 2.5.3 takes hparams of type int, float or str
only (a bool raises TypeError, a numpy scalar is dropped without a word), so every value
here is a plain Python one.
"""
from __future__ import annotations

import random

import numpy as np
from paddle.callbacks import Callback

from app.data.picks import pick_images
from app.inspect import figures
from app.inspect.attention_maps import attention_grid
from app.run.records import open_records
from app.train.callbacks import EpochMetrics, scalar
from models import nchw_twin
from models.attention import list_attentions

ATTENTION_IMAGES = 8  # the same eval images for every run of a split (pick_images, seed 0)
TRAIN_SAMPLES = 16
ATTENTION_LAYERS = 6  # at most, evenly spread: a 17-layer MobileNetV2 grid is unreadable


def model_parts(name: str) -> tuple[str, str]:
    """(host, attention) of a registered model name: ``mobilenet_v2_ca`` -> (mobilenet_v2, ca)."""
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
        return figures.confusion_image(matrix, self.classes)

    def attention_due(self, epoch: int) -> bool:
        return bool(self.attention_every) and (epoch % self.attention_every == 0
                                               or epoch == self.epochs)

    def attention(self) -> np.ndarray | None:
        """The attention-map grid of the fixed eval images, or None without attention."""
        was_training = self.network.training
        try:  # the maps are read off NCHW feature maps: a channels-last network's NCHW twin
            return attention_grid(nchw_twin(self.network), self.eval_ds, self.attention_indices,
                                  self.classes, max_layers=ATTENTION_LAYERS)[1]
        finally:
            self.network.train(was_training)


# What the HParams tab shows per run: scalar tags whose last value is the metric.
HPARAM_METRICS = ["hparam/best_top1", "eval/top1", "hparam/best_loss", "eval/loss",
                  "hparam/params", "hparam/gmacs", "train/images_per_s"]


class VisualDLLogger(Callback):
    """Scalars: train loss/acc every ``log_freq`` steps; eval loss/top-1/top-5, lr, train
    images/s and the best top-1 / eval loss so far per epoch. HParams: one record per run
    (``hparams``: plain int / float / str values), written when the run starts, never again
    on resume. Images (``images``, see :class:`RunImages`): training samples as the model sees
    them (once), the confusion matrix at every new best, attention maps every
    ``attention_every`` epochs and at the last.

    Diverges from ``paddle.callbacks.VisualDL``, whose step counters restart at 0 on
    resume and which does not log the learning rate, hparams or images.
    """

    def __init__(self, run_dir, metrics: EpochMetrics, steps_per_epoch: int,
                 start_epoch: int = 0, log_freq: int = 10, hparams: dict | None = None,
                 images=None, best: dict | None = None):
        super().__init__()
        self.writer = open_records(run_dir, start_epoch, steps_per_epoch)
        self.metrics = metrics
        self.steps_per_epoch, self.start_epoch = steps_per_epoch, start_epoch
        self.log_freq = max(1, log_freq)
        self.hparams, self.images = hparams, images
        best = best or {}
        self.best_acc = best.get("acc", float("-inf"))
        self.best_loss = best.get("loss", float("inf"))

    def on_train_begin(self, logs=None):
        if self.start_epoch == 0 and self.hparams is not None:
            values = {k: v for k, v in self.hparams.items() if not k.startswith("metric:")}
            self.writer.add_hparams(values, HPARAM_METRICS)
            for tag in ("params", "gmacs"):
                self.writer.add_scalar(f"hparam/{tag}", float(self.hparams[f"metric:{tag}"]), 0)
        if self.start_epoch == 0 and self.images is not None:
            self.writer.add_image("train/samples", self.images.train_grid(), 0)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_index = self.start_epoch + epoch

    def on_train_batch_end(self, step, logs=None):
        if step % self.log_freq == 0:
            global_step = self.epoch_index * self.steps_per_epoch + step
            self.writer.add_scalar("train/loss", scalar(logs["loss"]), global_step)
            self.writer.add_scalar("train/acc", scalar(logs["acc_top1"]), global_step)

    def on_eval_end(self, logs=None):
        row = self.metrics.last_row
        for tag, key in [("eval/loss", "eval_loss"), ("eval/top1", "eval_acc"),
                         ("eval/top5", "eval_top5"), ("train/epoch_loss", "train_loss"),
                         ("train/epoch_acc", "train_acc"), ("lr", "lr"),
                         ("train/images_per_s", "train_images_per_s")]:
            self.writer.add_scalar(tag, row[key], row["epoch"])
        new_best = row["eval_acc"] > self.best_acc
        self.best_acc = max(self.best_acc, row["eval_acc"])
        self.best_loss = min(self.best_loss, row["eval_loss"])
        self.writer.add_scalar("hparam/best_top1", self.best_acc, row["epoch"])
        self.writer.add_scalar("hparam/best_loss", self.best_loss, row["epoch"])
        if self.images is not None:
            matrix = self.model.confusion.last  # the eval just finished (hapi reset .matrix)
            if new_best and matrix is not None:
                self.writer.add_image("eval/confusion_matrix_best",
                                      self.images.confusion(matrix), row["epoch"])
            if self.images.attention_due(row["epoch"]):
                picture = self.images.attention()
                if picture is not None:
                    self.writer.add_image("eval/attention_maps", picture, row["epoch"])
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()
