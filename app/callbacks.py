"""hapi callbacks: NaN guard, per-epoch metrics + metrics.csv, VisualDL, save-best/last.

hapi numbers epochs from 0 within each ``fit`` call; a resumed run passes ``start_epoch``
so every callback writes the run's own epoch numbers (1-based in files and logs).
Only rank 0 writes anything.
"""
import csv
import io
import math
import sys
import time
from pathlib import Path

import numpy as np
import paddle
import paddle.distributed as dist
from paddle.callbacks import Callback
from tqdm import tqdm

from app import checkpoint
from app.atomic import atomic_write_json, atomic_write_text
from app.errors import UserError

METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "eval_loss", "eval_acc", "eval_top5",
                  "lr", "epoch_seconds", "train_images_per_s"]


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/inf loss; the run stops and keeps its last good checkpoints."""


def _scalar(value) -> float:
    return float(np.asarray(value).reshape(-1)[0])


class EpochSeed(Callback):
    """Reseed Python's, NumPy's and Paddle's generators at the start of every epoch from
    (seed, epoch): augmentation, mixup draws and dropout of epoch e do not depend on what
    ran before it, so a run resumed at epoch e trains exactly as the uninterrupted one."""

    def __init__(self, seed: int, start_epoch: int) -> None:
        super().__init__()
        self.seed, self.start_epoch = seed, start_epoch

    def on_epoch_begin(self, epoch, logs=None):
        from app.engine import epoch_seed, seed_everything

        seed_everything(epoch_seed(self.seed, self.start_epoch + epoch))


class NonFiniteLossGuard(Callback):
    """Stops the run on a NaN/inf training loss. Under data parallel every rank has one
    (collective): the ranks agree on each step's verdict, so all of them stop together
    -- rank 0 included, which marks state.json "diverged" -- instead of the healthy ranks
    waiting on a dead one until the launcher kills the job."""

    def __init__(self, start_epoch: int = 0, world: int = 1):
        super().__init__()
        self.start_epoch, self.world = start_epoch, world
        self.epoch = start_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = self.start_epoch + epoch + 1

    def on_train_batch_end(self, step, logs=None):
        loss = _scalar(logs["loss"])
        bad = not math.isfinite(loss)
        if self.world > 1:
            flag = paddle.to_tensor([1.0 if bad else 0.0])
            dist.all_reduce(flag)
            bad = float(flag.numpy()[0]) > 0
        if bad:
            what = loss if not math.isfinite(loss) else "non-finite on another rank"
            raise NonFiniteLoss(f"loss became {what} at epoch {self.epoch}, step {step + 1}")


class RankTrainTotals(Callback):
    """Data parallel: each epoch's train loss and top-1 over all ranks' shards (collective:
    every rank has one). ``EpochMetrics`` on rank 0 reads ``loss`` / ``acc`` from it."""

    def __init__(self, world: int):
        super().__init__()
        self.world = world

    def on_epoch_begin(self, epoch, logs=None):
        self.loss_sum, self.seen = 0.0, 0

    def on_train_batch_end(self, step, logs=None):
        n = int(logs.get("batch_size", self.world)) // self.world  # hapi logs batch x ranks
        self.loss_sum += _scalar(logs["loss"]) * n
        self.seen += n

    def on_epoch_end(self, epoch, logs=None):
        acc = _scalar(logs.get("acc_top1", 0.0))  # hapi's running top-1 of this rank's shard
        totals = paddle.to_tensor([self.loss_sum, float(self.seen), acc * self.seen], dtype="float64")
        dist.all_reduce(totals)
        loss_sum, seen, correct = totals.numpy().tolist()
        self.loss, self.acc = loss_sum / max(seen, 1), correct / max(seen, 1)


def read_metrics(path) -> list:
    """Rows of a metrics.csv as dicts of floats (epoch as int); [] if it does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        with open(path, newline="") as f:
            return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
                    for row in csv.DictReader(f)]
    except (ValueError, TypeError, KeyError, csv.Error) as e:
        raise UserError(f"{path} is damaged ({type(e).__name__}); restore it or move the run "
                        f"folder away") from None


def write_metrics(path, rows: list) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (row[k] if k == "epoch" else f"{row[k]:.6g}")
                         for k in METRIC_COLUMNS})
    atomic_write_text(path, buf.getvalue())


class EpochMetrics(Callback):
    """Collects one row per epoch (see METRIC_COLUMNS), shows a progress bar, prints a
    one-line summary and rewrites ``metrics.csv`` (keeping rows of earlier epochs)."""

    def __init__(self, run_dir, start_epoch: int = 0, total_epochs: int = 0, rows=None,
                 rank_totals: "RankTrainTotals | None" = None):
        super().__init__()
        self.rank_totals = rank_totals
        self.path = Path(run_dir) / "metrics.csv"
        self.start_epoch, self.total_epochs = start_epoch, total_epochs
        self.rows = list(rows or [])
        self.last_row = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = self.start_epoch + epoch + 1
        self.t0 = time.perf_counter()
        self.lr = float(self.model._optimizer.get_lr())
        self.loss_sum, self.seen = 0.0, 0
        self.bar = tqdm(total=self.params.get("steps"), desc=f"epoch {self.epoch}",
                        leave=False, file=sys.stderr, disable=None)

    def on_train_batch_end(self, step, logs=None):
        n = int(logs.get("batch_size", 1))
        self.loss_sum += _scalar(logs["loss"]) * n
        self.seen += n
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{self.loss_sum / self.seen:.3f}")

    def on_epoch_end(self, epoch, logs=None):
        self.bar.close()
        self.train_seconds = time.perf_counter() - self.t0
        self.train_acc = _scalar(logs.get("acc_top1", 0.0))

    def on_eval_end(self, logs=None):
        top5 = next((k for k in logs if k.startswith("acc_top") and k != "acc_top1"), None)
        row = {
            "epoch": self.epoch,
            "train_loss": (self.rank_totals.loss if self.rank_totals
                           else self.loss_sum / max(self.seen, 1)),
            "train_acc": self.rank_totals.acc if self.rank_totals else self.train_acc,
            "eval_loss": _scalar(logs["mean_loss"]),  # over all ranks (engine.MeanLoss)
            "eval_acc": _scalar(logs["acc_top1"]),
            "eval_top5": _scalar(logs[top5]) if top5 else float("nan"),
            "lr": self.lr,
            "epoch_seconds": time.perf_counter() - self.t0,
            # hapi's per-batch "batch_size" is already the batch over all ranks
            "train_images_per_s": self.seen / max(self.train_seconds, 1e-9),
        }
        self.rows = [r for r in self.rows if r["epoch"] < self.epoch] + [row]
        self.last_row = row
        write_metrics(self.path, self.rows)
        print(f"epoch {self.epoch}/{self.total_epochs}  "
              f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
              f"eval loss {row['eval_loss']:.4f} top1 {row['eval_acc']:.4f} "
              f"top5 {row['eval_top5']:.4f}  lr {row['lr']:.5f}  "
              f"{row['epoch_seconds']:.1f}s  {row['train_images_per_s']:.1f} img/s",
              flush=True)


class AverageRunningStats(Callback):
    """Data parallel: average the BatchNorm running statistics over the ranks after every
    training epoch, before eval and the checkpoint.

    ``paddle.DataParallel`` all-reduces gradients only. BatchNorm's ``_mean``/``_variance``
    are parameters without gradients (not buffers), so each rank's follow its own shard: the
    ranks would evaluate their shards with different statistics, and rank 0 would save
    statistics of half the data. Every rank needs this callback (it is collective). The
    shards' batches have equal sizes, so the averaged running mean is exactly the running
    mean of the global batches.
    """

    def on_epoch_end(self, epoch, logs=None):
        network, world = self.model.network, dist.get_world_size()
        with paddle.no_grad():
            for tensor in [*network.parameters(), *network.buffers()]:
                if tensor.stop_gradient and paddle.is_floating_point(tensor):
                    dist.all_reduce(tensor)
                    tensor.set_value(tensor / world)


# Scalar tags stepped per training step (global step); the others are stepped per epoch.
STEP_TAGS = ("train/loss", "train/acc")


def _record_files(run_dir) -> list:
    return sorted(p for p in Path(run_dir).iterdir() if p.name.startswith("vdlrecords"))


def carry_over_records(run_dir, keep_epochs: int, steps_per_epoch: int):
    """A new VisualDL writer for a resumed run, holding the run's records of its first
    ``keep_epochs`` epochs (each tag and step once); the older record files are removed.

    VisualDL 2.5.3 shows one record file per run folder, the newest: a resumed run that
    simply opened a second file would show only the epochs after the resume. The interrupted
    epoch's points are dropped here, so that every step appears once.
    """
    return rewrite_records(run_dir, lambda tag, step: step <= (
        keep_epochs * steps_per_epoch - 1 if tag in STEP_TAGS else keep_epochs))


def rewrite_records(run_dir, keep=lambda tag, step: True):
    """A new VisualDL writer for ``run_dir`` holding the records of its record files that
    ``keep(tag, step)`` accepts (each tag and step once, the latest); the old files are
    removed once the new one is written. Add to the writer, then close it: this is how
    anything is added to a run after it trained (VisualDL shows only the newest file)."""
    from PIL import Image
    from visualdl import LogReader, LogWriter

    scalars, images, hparams = {}, {}, None
    old = _record_files(run_dir)
    for path in old:
        reader = LogReader(file_path=str(path))
        tags = reader.get_tags()
        for tag in tags.get("scalar", []):
            for rec in reader.get_data("scalar", tag):
                if keep(tag, rec.id):
                    scalars[(tag, rec.id)] = (rec.value, rec.timestamp)
        for tag in tags.get("image", []):
            for rec in reader.get_data("image", tag):
                if keep(tag, rec.id):
                    images[(tag, rec.id)] = (rec.image.encoded_image_string, rec.timestamp)
        if tags.get("hyper_parameters") and hparams is None:
            hparams = reader.get_data("hyper_parameters", "hparam")[0].hparam
    # A name that sorts after every old file (VisualDL's own is vdlrecords.<seconds>.log,
    # which a resume within the same second would reuse).
    stamps = [int(p.name.split(".")[1]) for p in old if p.name.split(".")[1].isdigit()]
    name = f"vdlrecords.{max([int(time.time())] + [t + 1 for t in stamps])}.log"
    writer = LogWriter(logdir=str(run_dir), file_name=name)
    if hparams is not None:
        values = {h.name: getattr(h, h.WhichOneof("type")) for h in hparams.hparamInfos}
        writer.add_hparams(values, [m.name for m in hparams.metricInfos])
    for (tag, step), (value, walltime) in sorted(scalars.items(), key=lambda kv: kv[0][1]):
        writer.add_scalar(tag, value, step, walltime)
    for (tag, step), (png, walltime) in sorted(images.items(), key=lambda kv: kv[0][1]):
        writer.add_image(tag, np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), step,
                         walltime)
    writer.flush()
    for path in old:  # the new file holds everything kept; it sorts last, so it is the one shown
        if path.name != Path(writer.file_name).name:
            path.unlink()
    return writer


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
        from visualdl import LogWriter

        if start_epoch:
            self.writer = carry_over_records(run_dir, start_epoch, steps_per_epoch)
        else:
            self.writer = LogWriter(logdir=str(run_dir))
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
            self.writer.add_scalar("train/loss", _scalar(logs["loss"]), global_step)
            self.writer.add_scalar("train/acc", _scalar(logs["acc_top1"]), global_step)

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
            if new_best:
                matrix = self.model.confusion.matrix
                self.writer.add_image("eval/confusion_matrix_best",
                                      self.images.confusion(matrix), row["epoch"])
            if self.images.attention_due(row["epoch"]):
                picture = self.images.attention()
                if picture is not None:
                    self.writer.add_image("eval/attention_maps", picture, row["epoch"])
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()


class SaveBest(Callback):
    """Every epoch: last.pdparams/.pdopt + state.json; on a new best eval top-1:
    best.pdparams + best.json (with ``meta``: what eval.py needs to rebuild the model).
    All files are written atomically; state.json is written last, so it never points
    at a checkpoint that is not there."""

    def __init__(self, run_dir, metrics: EpochMetrics, meta: dict, state: dict, ema=None):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.metrics, self.meta, self.state, self.ema = metrics, meta, state, ema

    def on_eval_end(self, logs=None):
        row = self.metrics.last_row
        network = self.model.network
        if row["eval_acc"] > self.state.get("best_acc", -1.0):
            checkpoint.save_best(self.run_dir, network,
                                 {**self.meta, "epoch": row["epoch"], "eval_acc": row["eval_acc"],
                                  "eval_top5": row["eval_top5"]})
            self.state.update(best_acc=row["eval_acc"], best_epoch=row["epoch"])
        checkpoint.save_last(self.run_dir, network, self.model._optimizer, self.state, row["epoch"],
                             params=self.ema.checkpoint_params() if self.ema else None)


def save_last(run_dir, model, state: dict, epoch: int, status: str = "running") -> None:
    """Save a resumable checkpoint for the end of ``epoch`` (0: before training); see
    app/checkpoint.py for how a kill at any moment is survived."""
    checkpoint.save_last(run_dir, model.network, model._optimizer, state, epoch, status)


def write_state(run_dir, state: dict) -> None:
    atomic_write_json(Path(run_dir) / "state.json", state)
