"""Model size and cost: parameters, multiply-accumulates, CPU latency.

    python -m models.summary [names ...] [--image-size 256] [--no-latency] [--num-classes 16]

``paddle.flops`` crashes under numpy 2 with paddle 3.3.1 (``int()`` of a 1-element array),
so :func:`count_macs` counts multiply-accumulates itself with forward post-hooks on the
matmul-like layers: Conv1D/Conv2D (grouped convs included) and Linear, plus what a layer
reports through an ``extra_macs(input_shape)`` method (the non-local block's two attention
matmuls). BatchNorm, activations, pooling and element-wise attention arithmetic (SimAM,
gating products) are left out; they are a fraction of a percent of any model here.
1 MAC = 2 FLOPs.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import paddle
from paddle import nn

from . import create_model, list_models

_CONVS = (nn.Conv1D, nn.Conv2D)


def count_params(model: nn.Layer, trainable_only: bool = True) -> int:
    """Number of parameter elements; BatchNorm running statistics count only with ``trainable_only=False``."""
    return sum(math.prod(p.shape) for p in model.parameters() if not (trainable_only and p.stop_gradient))


def _layer_macs(layer: nn.Layer, output: paddle.Tensor) -> int:
    if isinstance(layer, _CONVS):
        per_output = layer._in_channels // layer._groups * math.prod(layer._kernel_size)
        return math.prod(output.shape) * per_output
    return math.prod(output.shape) * layer.weight.shape[0]  # Linear: weight is [in, out]


def count_macs(model: nn.Layer, image_size: int, in_channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass on one ``image_size`` square image."""
    total = 0

    def hook(layer, inputs, output):
        nonlocal total
        total += _layer_macs(layer, output)

    def extra_hook(layer, inputs, output):
        nonlocal total
        total += layer.extra_macs(inputs[0].shape)

    layers = model.sublayers(include_self=True)
    handles = [m.register_forward_post_hook(hook) for m in layers
               if isinstance(m, (*_CONVS, nn.Linear))]
    handles += [m.register_forward_post_hook(extra_hook) for m in layers
                if callable(getattr(m, "extra_macs", None))]
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model(paddle.zeros([1, in_channels, image_size, image_size]))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


def measure_latency(model: nn.Layer, image_size: int, batch_size: int = 1, steps: int = 5,
                    warmup: int = 2, in_channels: int = 3) -> float:
    """Median CPU inference time per image in ms (eval mode, no_grad, after ``warmup`` runs)."""
    x = paddle.randn([batch_size, in_channels, image_size, image_size])
    was_training = model.training
    model.eval()
    times = []
    try:
        with paddle.no_grad():
            for i in range(warmup + steps):
                t0 = time.perf_counter()
                model(x).numpy()  # .numpy() waits for the result
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
    finally:
        model.train(was_training)
    return statistics.median(times) * 1000.0 / batch_size


def summarize(names: list[str], image_size: int = 256, latency: bool = True,
              num_classes: int = 16) -> list[dict]:
    """One dict per model: name, params (trainable), gmacs, ms (CPU ms/img, None without latency)."""
    rows = []
    for name in names:
        model = create_model(name, num_classes=num_classes)
        rows.append({
            "name": name,
            "params": count_params(model),
            "gmacs": count_macs(model, image_size) / 1e9,
            "ms": measure_latency(model, image_size) if latency else None,
        })
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'model':<22}{'params':>14}{'GMACs':>10}{'CPU ms/img':>12}"]
    for r in rows:
        ms = "-" if r["ms"] is None else f"{r['ms']:.1f}"
        lines.append(f"{r['name']:<22}{r['params']:>14,}{r['gmacs']:>10.3f}{ms:>12}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.summary", description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", help="registered model names (default: all)")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--num-classes", type=int, default=16)
    p.add_argument("--no-latency", dest="latency", action="store_false")
    args = p.parse_args(argv)
    try:
        rows = summarize(args.names or list_models(), args.image_size, args.latency, args.num_classes)
    except ValueError as e:  # unknown model name
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"input {args.image_size}x{args.image_size}, batch 1, {paddle.get_device()}")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
