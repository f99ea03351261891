"""How far bfloat16 training moves each weight gradient from the exact one, against float32,
against rounding only the weights and the input to bfloat16, and against PyTorch's autocast.

One training-mode step (BatchNorm on the batch's statistics) on one batch, from the same
weights, several ways; each parameter's gradient is compared with the float64 gradient of the
same step (NCHW, Paddle's float64 kernels) by its relative L2 distance ``|g - g64| / |g64|``:

- ours float32: as training runs it (channels-last where the model has it, the backend's kernels);
- ours bf16: as ``-o train.amp=bf16`` trains (the backend's bf16 chains);
- rounding only: float64 after rounding the weights and the input to bfloat16, the change any
  bfloat16 scheme makes before its first multiply, so a floor no bfloat16 training gets under;
- PyTorch float32 and autocast (``--torch-python PYTHON``, an interpreter with torch): the
  PyTorch twin (bench/torch_towernet.py) channels-last, in float32 and under CPU autocast
  bfloat16, given the same weights and batch.

The last column is ours bf16 over PyTorch's autocast (over rounding only without
``--torch-python``): near 1, our bfloat16 training is as exact as the reference; a layer far
beyond rounding, where the rest are not, points at a kernel, not at the number format. Also
each way's median component along the float64 gradient, ``<g, g64> / |g64|^2``: a kernel that
scales a gradient shows there. Dropout is off in every pass (one network). Parameters whose
exact gradient is 0 (the bias of a BatchNorm whose output only reaches training-mode
BatchNorms) are left out and named.

  python bench/bf16_gradients.py --run RUN_DIR [--torch-python /venv-with-torch/bin/python]
  python bench/bf16_gradients.py --model resnet50      # initial weights, a random batch

Use a trained run: at their initial weights, deep networks' gradients are chaotic (rounding
alone moves ResNet-50's by ~110% and MobileNetV2's by ~80%), so the distances say little there.
A diagnostic, not a test: the distances depend on the weights and the batch.
Measurements: docs/findings.md, section 4.
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import app  # noqa: F401  (environment defaults; must come before paddle)

# isort: split
import numpy as np
import paddle

from app.build.network import build_network
from app.inspect.evaluate import eval_dataset, find_checkpoint, load_network
from app.util.errors import UserError, exit_on_user_error
from backend import onednn
from bench.throughput import TWINS
from models import channels_last_capable

ZERO = 1e-9  # an exact gradient this far below the median parameter's is 0 in exact arithmetic


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a trained run folder: its best weights and eval images")
    source.add_argument("--model", help="a registered model at its initial weights, on a random batch")
    p.add_argument("--data", help="with --run: another split folder with the run's classes")
    p.add_argument("--num-classes", type=int, default=16, help="with --model")
    p.add_argument("--image-size", type=int, default=128, help="with --model")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-python", metavar="PYTHON",
                   help="an interpreter with torch: also PyTorch's float32 and autocast steps")
    p.add_argument("--top", type=int, default=5, help="how many parameters furthest beyond rounding to name")
    return p.parse_args(argv)


def load(args) -> tuple:
    """(state dict, images [N, 3, S, S], labels [N, 1], (model name, classes, kwargs), what it is)."""
    rng = np.random.default_rng(args.seed)
    if args.run:
        weights, meta = find_checkpoint(args.run)
        state = load_network(weights, meta).state_dict()
        ds = eval_dataset(meta, args.data)
        picks = np.linspace(0, len(ds) - 1, min(args.batch_size, len(ds))).round().astype(int)
        images, labels = zip(*(ds[int(i)] for i in picks))  # spread over the classes' folders
        x, y = np.stack(images), np.array(labels, dtype=np.int64).reshape(-1, 1)
        spec = (meta["model"], meta["num_classes"], meta.get("model_kwargs"))
        name = f"{spec[0]} from {weights}, {len(picks)} eval images at {meta['image_size']} px"
    else:
        paddle.seed(args.seed)
        spec = (args.model, args.num_classes, None)
        state = build_network(*spec).state_dict()
        s = args.image_size
        x = rng.standard_normal((args.batch_size, 3, s, s), dtype=np.float32)
        y = rng.integers(0, args.num_classes, (args.batch_size, 1)).astype(np.int64)
        name = f"{spec[0]} at its initial weights (seed {args.seed}), a random batch at {s} px"
    return {k: v.numpy().copy() for k, v in state.items()}, x, y, spec, name


def network_for(spec: tuple, state: dict, channels_last: bool, dtype: str = "float32"):
    """The network of ``spec`` with ``state``, in training mode, dropout off."""
    network = build_network(*spec, channels_last=channels_last)
    if dtype != "float32":
        network.to(dtype=dtype)
    network.set_state_dict({k: paddle.to_tensor(v.astype(dtype) if v.dtype == np.float32 else v)
                            for k, v in state.items()})
    for layer in network.sublayers():
        if isinstance(layer, paddle.nn.Dropout):
            layer.p = 0.0
    network.train()
    return network


def trainable(network) -> list:
    """(name, parameter) of the trainable parameters, in the order the PyTorch twins list theirs."""
    return [(n, p) for n, p in network.named_parameters() if not p.stop_gradient]


def gradients(network, x: np.ndarray, y: np.ndarray, bf16: bool = False) -> tuple:
    """(loss, {parameter: gradient as float64}) of one step of ``network`` on ``x``, ``y``."""
    dtype = trainable(network)[0][1].dtype
    network.clear_gradients()
    onednn.set_bf16_training(bf16)
    try:
        loss = paddle.nn.functional.cross_entropy(network(paddle.to_tensor(x).astype(dtype)),
                                                  paddle.to_tensor(y))
        loss.backward()
    finally:
        onednn.set_bf16_training(False)
    return float(loss), {n: p.grad.numpy().astype(np.float64) for n, p in trainable(network)}


def bf16_rounded(a: np.ndarray) -> np.ndarray:
    return paddle.to_tensor(a).astype("bfloat16").astype("float32").numpy()


def torch_gradients(python: str, model: str, num_classes: int, params: list, state: dict,
                    x, y) -> tuple:
    """({"PyTorch float32" | "PyTorch autocast": grads}, their losses, the float64 grads) of
    the PyTorch twin (bench/torch_towernet.py ``gradients``, run by ``python``) from the same
    weights (``state``; ``params``: :func:`trainable`, the twin's order) and batch."""
    if model not in TWINS:
        raise UserError(f"--torch-python: no PyTorch twin of {model} ({', '.join(TWINS)})")

    def ours_to_torch(a, p):  # Linear weights: [in, out] here, [out, in] in PyTorch
        return a.T if p.ndim == 2 else a

    weights = {f"w{i}": ours_to_torch(state[n], p) for i, (n, p) in enumerate(params)}
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, **weights, x=x, y=y, model=model, num_classes=num_classes,
                 threads=len(os.sched_getaffinity(0)))
        script = Path(__file__).with_name("torch_towernet.py")
        proc = subprocess.run([python, str(script), "gradients", str(src), str(dst)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"--torch-python {python}: the PyTorch step failed ({last})")
        out = dict(np.load(dst))
    grads = {kind: {n: ours_to_torch(out[f"{kind}_{i}"], p).astype(np.float64)
                    for i, (n, p) in enumerate(params)} for kind in ("fp32", "bf16", "fp64")}
    return ({"PyTorch float32": grads["fp32"], "PyTorch autocast": grads["bf16"]},
            {"PyTorch float32": float(out["fp32_loss"]), "PyTorch autocast": float(out["bf16_loss"])},
            grads["fp64"])


def distance(g, reference) -> float:
    return float(np.linalg.norm(g - reference) / max(np.linalg.norm(reference), 1e-300))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.batch_size < 2:
        raise UserError("--batch-size must be at least 2 (BatchNorm trains on the batch)")
    if not onednn.available() or not onednn.cpu_bf16_flags():
        raise UserError("bfloat16 training needs the oneDNN backend on a CPU that multiplies "
                        f"bfloat16 ({' or '.join(onednn.BF16_FLAGS)})")
    state, x, y, spec, name = load(args)
    exact = network_for(spec, state, channels_last=False, dtype="float64")
    losses, grads = {}, {}
    losses["float64"], g64 = gradients(exact, x, y)
    ours = network_for(spec, state, channels_last=channels_last_capable(spec[0]))  # as train.py
    losses["ours float32"], grads["ours float32"] = gradients(ours, x, y)
    losses["ours bf16"], grads["ours bf16"] = gradients(ours, x, y, bf16=True)
    names = [n for n, _ in trainable(ours)]
    rounded = {k: (bf16_rounded(v) if k in names else v) for k, v in state.items()}
    losses["rounding only"], grads["rounding only"] = gradients(
        network_for(spec, rounded, channels_last=False, dtype="float64"), bf16_rounded(x), y)
    if args.torch_python:
        more, more_losses, twin = torch_gradients(args.torch_python, spec[0], spec[1],
                                                  trainable(ours), state, x, y)
        grads.update(more)
        losses.update(more_losses)
    scale = np.median([np.linalg.norm(g) for g in g64.values()])
    zero = [n for n in names if np.linalg.norm(g64[n]) < ZERO * scale]
    kept = [n for n in names if n not in zero]
    columns = {label: {n: distance(g[n], g64[n]) for n in kept} for label, g in grads.items()}
    against = "PyTorch autocast" if args.torch_python else "rounding only"
    print(f"{name}; loss " + ", ".join(f"{k} {v:.6f}" for k, v in losses.items()))
    if args.torch_python:  # the twin is the same function: its exact gradient is ours
        print(f"PyTorch's float64 gradients against ours: median distance "
              f"{np.median([distance(twin[n], g64[n]) for n in kept]):.1e}")
    if zero:
        print(f"left out: {len(zero)} parameters whose exact gradient is 0 (below {ZERO:g} of "
              f"the median parameter's): " + ", ".join(zero[:3]) + (", ..." if len(zero) > 3 else ""))
    print("median relative distance of the parameters' gradients from the float64 gradient; "
          f"ratio = ours bf16 / {against}")
    print(f"{'parameters':<12}{'n':>5}" + "".join(f"{c:>18}" for c in columns) + f"{'ratio':>8}")
    groups = collections.defaultdict(list)
    for n in kept:
        groups[n.split(".")[0]].append(n)
    for group, members in [*groups.items(), ("all", kept)]:
        medians = {c: float(np.median([col[n] for n in members])) for c, col in columns.items()}
        print(f"{group:<12}{len(members):>5}" + "".join(f"{m:>18.4f}" for m in medians.values())
              + f"{medians['ours bf16'] / max(medians[against], 1e-300):>8.2f}")
    along = {label: np.median([float((g[n] * g64[n]).sum() / (g64[n] ** 2).sum()) for n in kept])
             for label, g in grads.items()}
    print("median component along the float64 gradient (1: nothing lost or gained in its "
          "direction): " + ", ".join(f"{k} {v:.3f}" for k, v in along.items()))
    bf16, rounding = columns["ours bf16"], columns["rounding only"]
    print(f"furthest beyond rounding (ours bf16 - rounding only; ours bf16, {against}): " + ", ".join(
        f"{n} {bf16[n] - rounding[n]:+.4f} ({bf16[n]:.4f}, {columns[against][n]:.4f})"
        for n in sorted(kept, key=lambda n: rounding[n] - bf16[n])[:args.top]))
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_user_error(main))
