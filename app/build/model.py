"""The hapi ``paddle.Model`` a run trains: network, loss, metrics and mixed precision.

The training loop itself is hapi's ``Model.fit``; what it cannot do (resume offsets, NaN
guard, atomic checkpoints, metrics.csv, VisualDL with resumable step counters) lives in
``app/train/callbacks.py``.
"""
from __future__ import annotations

import paddle
from paddle.static import InputSpec

from app.build.loss import ClassificationLoss
from app.build.metrics import ConfusionCounts, MeanLoss, topk_for
from app.build.sharpness import SAMModel, SAMMomentum
from app.util.errors import UserError
from backend import onednn


def amp_configs_for(amp: str) -> dict | None:
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
        # bfloat16 has float32's exponent range: no loss scaling needed. "dtype" is for
        # prepare_model, which hands it to hapi its own way.
        return {"level": "O1", "init_loss_scaling": 1.0, "use_dynamic_loss_scaling": False,
                "dtype": "bfloat16"}
    return {"level": "O1"}


def _check_cpu_bf16() -> bool:
    if not onednn.cpu_bf16_flags():
        raise UserError("train.amp=bf16: this CPU does not multiply bfloat16 (no "
                        f"{' or '.join(onednn.BF16_FLAGS)} in /proc/cpuinfo); use train.amp=off")
    if not onednn.available():
        raise UserError("train.amp=bf16 on a CPU runs through the oneDNN backend, which is off "
                        "here (TOWERNET_ONEDNN=0 or no libdnnl in this Paddle); use train.amp=off")
    return True


def prepare_model(network, optimizer=None, *, image_size: int, num_classes: int,
                  amp_configs: dict | None = None, nam_penalty: float = 1e-4,
                  label_smoothing: float = 0.0) -> paddle.Model:
    """Wrap ``network`` in a hapi ``paddle.Model`` prepared with the loss, the metrics and
    ``amp_configs`` (:func:`amp_configs_for`, resolved once per run)."""
    model_class = SAMModel if isinstance(optimizer, SAMMomentum) else paddle.Model
    image = InputSpec([None, 3, image_size, image_size], "float32", "image")
    model = model_class(network, inputs=[image], labels=[InputSpec([None, 1], "int64", "label")])
    loss = ClassificationLoss(network, nam_penalty, label_smoothing)
    model.confusion = ConfusionCounts(network, num_classes)  # read by the VisualDL callback
    configs = dict(amp_configs) if amp_configs else None
    dtype = configs.pop("dtype", None) if configs else None
    model.prepare(optimizer, loss,
                  [paddle.metric.Accuracy(topk=topk_for(num_classes)), MeanLoss(network),
                   model.confusion],
                  amp_configs=configs)
    if dtype:
        # hapi 3.3.1 rejects a "dtype" key in amp_configs and calls paddle.amp.auto_cast
        # with its default float16; the keyword arguments it does pass on are these.
        model._adapter._amp_custom_lists["dtype"] = dtype
    return model
