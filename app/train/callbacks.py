"""hapi callbacks: seeds, NaN guard, per-epoch metrics + metrics.csv, save-best/last, frozen backbone.

VisualDL logging is in app/train/visualdl.py.

hapi numbers epochs from 0 within each ``fit`` call; a resumed run passes ``start_epoch``
so every callback writes the run's own epoch numbers (1-based in files and logs).
Only rank 0 writes anything.
"""
import math
import sys
import time

import numpy as np
import paddle
import paddle.distributed as dist
from paddle import nn
from paddle.callbacks import Callback
from tqdm import tqdm

from app.build.device import epoch_seed, seed_everything
from app.build.pretrained import loaded_batch_norms, loaded_parameters
from app.run import checkpoint
from app.run.folder import RunFolder


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/inf loss; the run stops and keeps its last good checkpoints."""


def scalar(value) -> float:
    return float(np.asarray(value).reshape(-1)[0])


class EpochSeed(Callback):
    """Reseed Python's, NumPy's and Paddle's generators at the start of every epoch from
    (seed, epoch): augmentation, mixup draws and dropout of epoch e do not depend on what
    ran before it, so a run resumed at epoch e trains exactly as the uninterrupted one."""

    def __init__(self, seed: int, start_epoch: int) -> None:
        super().__init__()
        self.seed, self.start_epoch = seed, start_epoch

    def on_epoch_begin(self, epoch, logs=None):
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
        loss = scalar(logs["loss"])
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
        self.loss_sum += scalar(logs["loss"]) * n
        self.seen += n

    def on_epoch_end(self, epoch, logs=None):
        acc = scalar(logs.get("acc_top1", 0.0))  # hapi's running top-1 of this rank's shard
        totals = paddle.to_tensor([self.loss_sum, float(self.seen), acc * self.seen], dtype="float64")
        dist.all_reduce(totals)
        loss_sum, seen, correct = totals.numpy().tolist()
        self.loss, self.acc = loss_sum / max(seen, 1), correct / max(seen, 1)


class EpochMetrics(Callback):
    """Collects one row per epoch (app.run.folder.METRIC_COLUMNS), shows a progress bar, prints a
    one-line summary and rewrites ``metrics.csv`` (keeping rows of earlier epochs)."""

    def __init__(self, run_dir, start_epoch: int = 0, total_epochs: int = 0, rows=None,
                 rank_totals: "RankTrainTotals | None" = None):
        super().__init__()
        self.rank_totals = rank_totals
        self.run = RunFolder(run_dir)
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
        self.loss_sum += scalar(logs["loss"]) * n
        self.seen += n
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{self.loss_sum / self.seen:.3f}")

    def on_epoch_end(self, epoch, logs=None):
        self.bar.close()
        self.train_seconds = time.perf_counter() - self.t0
        self.train_acc = scalar(logs.get("acc_top1", 0.0))

    def on_eval_end(self, logs=None):
        top5 = next((k for k in logs if k.startswith("acc_top") and k != "acc_top1"), None)
        row = {
            "epoch": self.epoch,
            "train_loss": (self.rank_totals.loss if self.rank_totals
                           else self.loss_sum / max(self.seen, 1)),
            "train_acc": self.rank_totals.acc if self.rank_totals else self.train_acc,
            "eval_loss": scalar(logs["mean_loss"]),  # over all ranks (build.metrics.MeanLoss)
            "eval_acc": scalar(logs["acc_top1"]),
            "eval_top5": scalar(logs[top5]) if top5 else float("nan"),
            "lr": self.lr,
            "epoch_seconds": time.perf_counter() - self.t0,
            # hapi's per-batch "batch_size" is already the batch over all ranks
            "train_images_per_s": self.seen / max(self.train_seconds, 1e-9),
        }
        self.rows = [r for r in self.rows if r["epoch"] < self.epoch] + [row]
        self.last_row = row
        self.run.write_metrics(self.rows)
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


class SaveBest(Callback):
    """Every epoch: last.pdparams/.pdopt + state.json; on a new best eval top-1:
    best.pdparams + best.json (with ``meta``: what eval.py needs to rebuild the model).
    All files are written atomically; state.json is written last, so it never points
    at a checkpoint that is not there."""

    def __init__(self, run_dir, metrics: EpochMetrics, meta: dict, state: dict, ema=None):
        super().__init__()
        self.run_dir = RunFolder(run_dir).path
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


class FreezeBackbone(Callback):
    """Loaded parameters and their BatchNorm statistics stay fixed for the first ``epochs`` epochs.

    Decided at every epoch's start from the run's epoch number, so a resumed run freezes
    (or not) exactly as the uninterrupted one would.
    """

    def __init__(self, network: nn.Layer, loaded_keys, epochs: int, start_epoch: int = 0):
        super().__init__()
        self.frozen = loaded_parameters(network, loaded_keys)
        self.norms = loaded_batch_norms(network, loaded_keys)
        # None (Paddle's default) means batch statistics in training, running ones in eval;
        # False would mean batch statistics in eval too, so the original value is restored.
        self.own_stats = [bn._use_global_stats for bn in self.norms]
        self.epochs, self.start = epochs, start_epoch

    def on_epoch_begin(self, epoch, logs=None):
        frozen = self.start + epoch < self.epochs
        for p in self.frozen:
            p.stop_gradient = frozen
        for bn, own in zip(self.norms, self.own_stats):
            bn._use_global_stats = True if frozen else own  # True: use, and keep, the loaded statistics

    def on_train_end(self, logs=None):
        self.on_epoch_begin(self.epochs)
