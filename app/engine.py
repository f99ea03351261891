"""Build the model, optimizer and hapi ``paddle.Model``; run evaluation and prediction.

The training loop itself is hapi's ``Model.fit``; what it cannot do (resume offsets, NaN
guard, atomic checkpoints, metrics.csv, VisualDL with resumable step counters) lives in
``app/callbacks.py``.
"""
import os
import random

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle.static import InputSpec

from app.errors import UserError
from app.sam import SAMModel, SAMMomentum
from backend import onednn
from models import channels_last_capable, create_model, list_models
from models.attention import has_nam, nam_sparsity_penalty


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def select_device(name: str = "auto", threads: int = 0) -> str:
    """Put Paddle on ``gpu`` (when CUDA is built in and a GPU is visible) or ``cpu``.

    On CPU the math kernels use ``threads`` threads (0: every core this process may use);
    Paddle's own default (OMP_NUM_THREADS=1 at import) is one thread.
    """
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if name == "gpu" and not has_gpu:
        raise UserError("--device gpu: this Paddle build has no CUDA or no GPU is visible "
                        "(install paddlepaddle-gpu from requirements-gpu.txt)")
    device = "gpu" if name == "gpu" or (name == "auto" and has_gpu) else "cpu"
    if device == "gpu":
        local = int(os.environ.get("FLAGS_selected_gpus", "0").split(",")[0])
        paddle.set_device(f"gpu:{local}")
    else:
        paddle.set_device("cpu")
        n = threads or max(1, available_cores() // max(1, world_size()))
        paddle.base.core.set_num_threads(n)
    return device


def world_size() -> int:
    return paddle.distributed.get_world_size()


def is_main_process() -> bool:
    return paddle.distributed.get_rank() == 0


def broadcast_from_main(obj):
    """``obj`` as rank 0 has it, on every rank (a no-op in a single process).

    Needs the parallel environment, which hapi's ``paddle.Model`` initialises when it is
    built under ``paddle.distributed.launch``.
    """
    if world_size() < 2:
        return obj
    objects = [obj]
    paddle.distributed.broadcast_object_list(objects, src=0)
    return objects[0]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The random seed of (run seed, 0-based epoch): the loader's shuffle and the per-epoch
    reseeding of augmentation (callbacks.EpochSeed) start from it."""
    return (seed * 100_003 + epoch) % 2**32


def check_model_name(name: str) -> None:
    if name not in list_models():
        raise UserError(f"unknown model '{name}'; known: {', '.join(list_models())}")


def use_channels_last(setting: str, name: str, device: str) -> bool:
    """``train.channels_last`` resolved: ``auto`` is on for a model that has the layout, on a
    CPU whose oneDNN path is available (that is where it is faster, bench/README.md)."""
    if setting == "off":
        return False
    if setting == "on":
        if not channels_last_capable(name):
            raise UserError(f"model '{name}' has no channels-last layout (train.channels_last=on); "
                            f"use auto or off")
        return True
    return channels_last_capable(name) and device == "cpu" and onednn.available()


def training_network(cfg: dict, num_classes: int, device: str) -> paddle.nn.Layer:
    """The network ``train.py`` trains for ``cfg``: its model, channels-last where
    ``train.channels_last`` resolves so on ``device``."""
    name = cfg["model"]["name"]
    return build_network(name, num_classes, cfg["model"]["kwargs"],
                         use_channels_last(cfg["train"]["channels_last"], name, device))


def build_network(name: str, num_classes: int, kwargs=None, channels_last: bool = False) -> paddle.nn.Layer:
    check_model_name(name)
    layout = {"data_format": "NHWC"} if channels_last else {}
    try:
        return create_model(name, num_classes=num_classes, **(kwargs or {}), **layout)
    except ValueError as e:
        raise UserError(str(e).splitlines()[0])
    except TypeError as e:
        raise UserError(f"model '{name}': {e}")


def build_optimizer(cfg: dict, network: paddle.nn.Layer, steps_per_epoch: int):
    """Momentum (Nesterov with ``optimizer.nesterov``; sharpness-aware with
    ``optimizer.sam_rho``, app/sam.py) + L2Decay (not on 1-D parameters with
    ``optimizer.no_decay_norm_bias``) with a cosine-annealing lr stepped once per batch.

    Parameters whose ``optimize_attr["learning_rate"]`` was scaled (``backbone_lr_mult``)
    step at that fraction of the schedule: Paddle's per-parameter learning rate.
    """
    opt = cfg["optimizer"]
    total = cfg["train"]["epochs"] * steps_per_epoch
    warmup = min(cfg["train"]["warmup_epochs"] * steps_per_epoch, total - 1)
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(learning_rate=opt["lr"],
                                                        T_max=total - warmup)
    if warmup > 0:  # linear from 0 to lr over the first epochs; the cosine still ends at the last step
        schedule = paddle.optimizer.lr.LinearWarmup(schedule, warmup_steps=warmup,
                                                    start_lr=0.0, end_lr=opt["lr"])
    params = network.parameters()
    if opt["no_decay_norm_bias"]:  # timm's filter_bias_and_bn, PaddleClas' no_weight_decay_name
        # 1-D parameters (norm scales and shifts, biases) decay at 0; Paddle lets a parameter's
        # own regularizer override the optimizer's weight_decay
        for p in params:
            if len(p.shape) <= 1:
                p.regularizer = paddle.regularizer.L2Decay(0.0)
    kwargs = dict(learning_rate=schedule, momentum=opt["momentum"], use_nesterov=bool(opt["nesterov"]),
                  parameters=params, weight_decay=paddle.regularizer.L2Decay(opt["weight_decay"]))
    if opt["sam_rho"]:
        if world_size() > 1:
            raise UserError("optimizer.sam_rho is not supported with data-parallel training "
                            "(its second pass would skip the gradient all-reduce); use one process")
        optimizer = SAMMomentum(opt["sam_rho"], **kwargs)
    else:
        optimizer = paddle.optimizer.Momentum(**kwargs)
    # Every velocity now (zeros), not at its parameter's first gradient: a parameter frozen
    # by train.freeze_epochs (or skipped by its host) has none yet when last.pdopt is written,
    # and Paddle refuses to add an accumulator after loading a state that lacks it.
    block = paddle.static.default_main_program().global_block()
    optimizer._create_accumulators(block, [p for p in network.parameters() if not p.stop_gradient])
    return optimizer


class ClassificationLoss(paddle.nn.Layer):
    """Cross-entropy (label-smoothed by ``label_smoothing`` while training), plus NAM's L1
    sparsity penalty when the network contains NAM."""

    def __init__(self, network: paddle.nn.Layer, nam_penalty: float = 1e-4,
                 label_smoothing: float = 0.0):
        super().__init__()
        self.network_ref, self.label_smoothing = [network], label_smoothing
        # A plain list, so the network's parameters are not registered a second time here.
        self._network = [network] if has_nam(network) and nam_penalty > 0 else []
        self.nam_penalty = nam_penalty

    def forward(self, logits, label):
        eps = self.label_smoothing if self.network_ref[0].training else 0.0
        soft = label.dtype != paddle.int64  # soft targets [N, K] from mixup / CutMix
        if soft or eps:  # cross-entropy against (1 - eps) * target + eps / K; Paddle 3.3.1's
            # own label_smoothing has no CPU kernel for integer labels
            k = logits.shape[-1]
            target = label.astype("float32") if soft else F.one_hot(label.reshape([-1]), k)
            target = target * (1.0 - eps) + eps / k
            loss = -(target * F.log_softmax(logits.astype("float32"), axis=-1)).sum(-1).mean()
        else:
            loss = F.cross_entropy(logits, label)
        if self._network:
            loss = loss + nam_sparsity_penalty(self._network[0], self.nam_penalty)
        return loss


class MeanLoss(paddle.metric.Metric):
    """The eval loss: cross-entropy averaged over every eval sample, logged as ``mean_loss``.

    Cross-entropy alone: NAM's sparsity penalty is part of the training objective (hapi's
    train ``loss``), not of how well the model predicts, and leaving it out keeps eval losses
    comparable across attention modules.

    A metric rather than a callback on hapi's per-batch ``loss``: under data parallel hapi
    feeds metrics the outputs it has gathered from all ranks and trimmed of the sampler's
    padding, so the eval loss covers every eval image exactly once, like eval accuracy
    (hapi's ``loss`` log is each rank's own shard). While ``network`` trains it adds nothing
    (nan): the train loss is hapi's per-batch ``loss``.
    """

    def __init__(self, network: paddle.nn.Layer):
        super().__init__()
        self.network = network
        self.reset()

    def compute(self, logits, label):
        if self.network.training:
            return paddle.zeros([]), label[:0]
        return F.cross_entropy(logits.astype("float32"), label), label

    def update(self, loss, label):
        self.total += np.asarray(loss).item() * len(label)
        self.count += len(label)
        return self.accumulate()

    def reset(self):
        self.total, self.count = 0.0, 0

    def accumulate(self) -> float:
        return self.total / self.count if self.count else float("nan")

    def name(self) -> str:
        return "mean_loss"


class ConfusionCounts(paddle.metric.Metric):
    """The eval confusion matrix (true x predicted counts) of the last eval, as ``matrix``.

    A metric for the same reason as :class:`MeanLoss`: hapi feeds it every eval image once,
    gathered from all ranks. ``accumulate`` returns the number of images counted.
    """

    def __init__(self, network: paddle.nn.Layer, num_classes: int):
        super().__init__()
        self.network, self.num_classes = network, num_classes
        self.reset()

    def compute(self, logits, label):
        if self.network.training:
            return label[:0], label[:0]
        return logits.argmax(axis=-1), label

    def update(self, pred, label):
        pred, label = np.asarray(pred).reshape(-1), np.asarray(label).reshape(-1)
        if len(pred):  # nothing while training (whose labels may be soft targets)
            np.add.at(self.matrix, (label.astype(np.int64), pred.astype(np.int64)), 1)
        return self.accumulate()

    def reset(self):
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def accumulate(self) -> float:
        return float(self.matrix.sum())

    def name(self) -> str:
        return "confusion_images"


def topk_for(num_classes: int) -> tuple:
    return (1, min(5, num_classes))


def amp_configs_for(amp: str) -> "dict | None":
    """hapi ``amp_configs`` for ``train.amp`` (off | fp16 | bf16) on the current device.

    On a GPU: Paddle's autocast (O1); bf16 needs bfloat16 support (compute capability 8.0).
    On a CPU: bf16 switches :mod:`backend.onednn`'s training convolutions to bfloat16 (hapi's
    autocast stays off: Paddle's CPU kernels have no bfloat16 conv) and returns None; it needs
    a CPU that multiplies bfloat16 and the oneDNN backend. fp16 on a CPU is refused.
    """
    on_cpu = paddle.get_device().startswith("cpu")
    if on_cpu:
        onednn.set_bf16_training(amp == "bf16" and _check_cpu_bf16())
    if amp == "off":
        return None
    if on_cpu:
        if amp == "fp16":
            raise UserError("train.amp=fp16 needs a GPU; on CPU use train.amp=off or bf16")
        return None
    if amp == "bf16":
        if not paddle.amp.is_bfloat16_supported():
            raise UserError("train.amp=bf16: this GPU has no bfloat16 support; "
                            "use train.amp=fp16")
        # bfloat16 has float32's exponent range: no loss scaling needed.
        return {"level": "O1", "init_loss_scaling": 1.0, "use_dynamic_loss_scaling": False}
    return {"level": "O1"}


def _check_cpu_bf16() -> bool:
    if not onednn.cpu_bf16_flags():
        raise UserError("train.amp=bf16: this CPU does not multiply bfloat16 (no "
                        f"{' or '.join(onednn.BF16_FLAGS)} in /proc/cpuinfo); use train.amp=off")
    if not onednn.available():
        raise UserError("train.amp=bf16 on a CPU runs through the oneDNN backend, which is off "
                        "here (TOWERNET_ONEDNN=0 or no libdnnl in this Paddle); use train.amp=off")
    return True


def prepare_model(network, cfg: dict, num_classes: int, optimizer=None) -> paddle.Model:
    """Wrap ``network`` in a hapi ``paddle.Model`` prepared with loss, metrics and AMP."""
    size = cfg["data"]["image_size"]
    model_class = SAMModel if isinstance(optimizer, SAMMomentum) else paddle.Model
    model = model_class(network, inputs=[InputSpec([None, 3, size, size], "float32", "image")],
                        labels=[InputSpec([None, 1], "int64", "label")])
    amp = cfg["train"]["amp"]
    loss = ClassificationLoss(network, cfg["optimizer"]["nam_penalty"],
                              cfg["train"]["label_smoothing"])
    model.confusion = ConfusionCounts(network, num_classes)  # read by the VisualDL callback
    amp_configs = amp_configs_for(amp)
    model.prepare(optimizer, loss,
                  [paddle.metric.Accuracy(topk=topk_for(num_classes)), MeanLoss(network),
                   model.confusion],
                  amp_configs=amp_configs)
    if amp == "bf16" and amp_configs is not None:
        # hapi 3.3.1 rejects a "dtype" key in amp_configs and calls paddle.amp.auto_cast
        # with its default float16; the keyword arguments it does pass on are these.
        model._adapter._amp_custom_lists["dtype"] = "bfloat16"
    return model


def build_loader(dataset, batch_size: int, shuffle: bool, num_workers: int = 0,
                 seed: int = 0, start_epoch: int = 0, collate_fn=None):
    """A DataLoader over a DistributedBatchSampler: each rank reads its own shard.

    The sampler shuffles with ``RandomState(epoch)``; the epoch counter starts at
    ``epoch_seed(seed, start_epoch)`` so the order differs between seeds and a resumed
    run sees the same order an uninterrupted run would have.
    """
    sampler = paddle.io.DistributedBatchSampler(dataset, batch_size=batch_size,
                                                shuffle=shuffle, drop_last=False)
    sampler.set_epoch(epoch_seed(seed, start_epoch))
    return paddle.io.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                                return_list=True, collate_fn=collate_fn)


@paddle.no_grad()
def _predict(network, loader, per_batch) -> tuple:
    network.eval()
    out, labels = [], []
    for images, label in loader:
        out.append(per_batch(images))
        labels.append(np.asarray(label).reshape(-1))
    return np.concatenate(out), np.concatenate(labels).astype("int64")


def predict_logits(network, loader) -> tuple:
    """Run ``network`` in eval mode over ``loader``; return (logits [N, C], labels [N])."""
    return _predict(network, loader, lambda images: network(images).astype("float32").numpy())


def predict_probs(network, loader, flip: bool = False) -> tuple:
    """(softmax probabilities [N, C], labels [N]) of ``network`` in eval mode over ``loader``;
    ``flip``: see :func:`view_probs` (each batch is read once for both views)."""
    return _predict(network, loader, lambda images: view_probs(network, images, flip))


def view_probs(network, images: paddle.Tensor, flip: bool = False) -> np.ndarray:
    """Softmax of ``network(images)`` (NCHW); ``flip``: averaged with that of the left-right
    mirror images (test-time augmentation)."""
    probs = softmax(network(images).astype("float32").numpy())
    if flip:
        probs = (probs + softmax(network(images.flip([3])).astype("float32").numpy())) / 2
    return probs


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
