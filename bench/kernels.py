"""Per-layer kernel timings: Paddle's own CPU conv / max-pool against backend.onednn's.

    python bench/kernels.py [--model towernet_simam] [--image-size 128] [--batch-size 32] [--repeats 5]
    python bench/kernels.py --bn-relu6 [--model mobilenet_v2] [--image-size 128] ...

Runs the model once to record the input shape of every conv and max-pool it runs (train
mode), then times forward + backward of each distinct layer geometry both ways, alternating
(``TOWERNET_ONEDNN`` toggled), and prints ms per call (best of two sets of ``--repeats``).
``--bn-relu6``: the channels-last model's fused BatchNorm + ReLU6 layers instead, oneDNN's BN
then Paddle's ReLU6 against backend/fused.py's kernel (``TOWERNET_FUSED`` toggled), each
shape weighted by how many layers have it. A benchmark, not a test. Figures: docs/speed.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import app  # noqa: F401  (environment defaults; must come before paddle)

# isort: split
import paddle

from app.build.device import select_device
from backend import onednn
from bench.timing import timed
from models import create_model


def record_layers(model: str, image_size: int, batch_size: int) -> list[tuple]:
    """(kind, layer, input shape) for each distinct conv / max-pool geometry one step runs."""
    net = create_model(model, num_classes=16)
    net.train()
    seen: dict[tuple, tuple] = {}

    def hook(layer, inputs, output):
        key = (type(layer).__name__, repr(layer), tuple(inputs[0].shape))
        seen.setdefault(key, (layer, tuple(inputs[0].shape)))

    hooks = [layer.register_forward_post_hook(hook) for layer in net.sublayers()
             if isinstance(layer, (paddle.nn.Conv2D, paddle.nn.MaxPool2D))]
    net(paddle.randn([batch_size, 3, image_size, image_size]))
    for h in hooks:
        h.remove()
    return [(key[0], layer, shape) for key, (layer, shape) in seen.items()]


def time_layer(layer, shape: tuple, repeats: int) -> float:
    x = paddle.randn(list(shape))
    x.stop_gradient = False

    def once():
        y = layer(x)
        y.backward(paddle.ones_like(y))
        x.clear_gradient()

    once()
    return sum(timed(once, repeats)) / repeats * 1000


def both_ways(switch: str, layer, shape: tuple, repeats: int) -> dict:
    """ms per forward + backward of ``layer`` with the environment ``switch`` at "0" and "1",
    alternating, best of two each."""
    best = {}
    for setting in ("0", "1", "0", "1"):
        os.environ[switch] = setting
        t = time_layer(layer, shape, repeats)
        best[setting] = min(best.get(setting, t), t)
    os.environ.pop(switch)
    return best


def bn_relu6(args) -> int:
    """Fused BN + ReLU6 layers of the channels-last model: TOWERNET_FUSED 0 against 1."""
    from backend import fused

    net = create_model(args.model, num_classes=16, data_format="NHWC")
    net.train()
    shapes: dict[tuple, list] = {}
    hooks = [layer.register_forward_pre_hook(
        lambda layer, inputs: shapes.setdefault(tuple(inputs[0].shape), []).append(layer))
        for layer in net.sublayers() if isinstance(layer, onednn.BatchNormReLU6)]
    net(paddle.randn([args.batch_size, 3, args.image_size, args.image_size]))
    for h in hooks:
        h.remove()
    if not shapes:
        print(f"{args.model} has no fused BatchNorm + ReLU6 layer (channels-last MobileNetV2 hosts do)")
        return 2
    if fused.load() is None:
        print(f"the BN + ReLU6 kernel is not available: {fused.reason()}")
        return 2
    print(f"{args.model} {args.image_size} px batch {args.batch_size}: BN + ReLU6 forward + backward, ms per call")
    print(f"{'input (NHWC)':<22} {'layers':>6} {'BN, ReLU6':>10} {'fused':>8} {'speed-up':>8}")
    total = {"0": 0.0, "1": 0.0}
    for shape, layers in shapes.items():
        best = both_ways("TOWERNET_FUSED", layers[0], shape, args.repeats)
        for k in total:
            total[k] += len(layers) * best[k]
        print(f"{str(list(shape)):<22} {len(layers):>6} {best['0']:>10.2f} {best['1']:>8.2f} "
              f"{best['0'] / best['1']:>7.2f}x")
    print(f"{'every layer, summed':<29} {total['0']:>10.1f} {total['1']:>8.1f} {total['0'] / total['1']:>7.2f}x")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="default: towernet_simam (mobilenet_v2 with --bn-relu6)")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--bn-relu6", action="store_true", help="time the fused BatchNorm + ReLU6 layers instead")
    args = p.parse_args()
    args.model = args.model or ("mobilenet_v2" if args.bn_relu6 else "towernet_simam")
    select_device("cpu", 0)
    if not onednn.available():
        print("oneDNN is not available in this process (see backend/onednn.py)")
        return 2
    if args.bn_relu6:
        return bn_relu6(args)
    print(f"{args.model} {args.image_size} px batch {args.batch_size}: forward + backward, ms per call")
    print(f"{'layer':<58} {'input':<20} {'paddle':>8} {'onednn':>8} {'speed-up':>8}")
    total = {"0": 0.0, "1": 0.0}
    for _, layer, shape in record_layers(args.model, args.image_size, args.batch_size):
        best = both_ways("TOWERNET_ONEDNN", layer, shape, args.repeats)
        total["0"] += best["0"]
        total["1"] += best["1"]
        print(f"{repr(layer)[:58]:<58} {str(list(shape)):<20} {best['0']:>8.1f} {best['1']:>8.1f} "
              f"{best['0'] / best['1']:>7.2f}x")
    print(f"{'distinct geometries, summed':<79} {total['0']:>8.1f} {total['1']:>8.1f} "
          f"{total['0'] / total['1']:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
