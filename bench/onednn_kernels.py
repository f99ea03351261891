"""Which oneDNN kernel runs each convolution pass of a model's training step, on this CPU.

    python bench/onednn_kernels.py --model resnet50 [--image-size 128] [--batch-size 32]
                                   [-o train.amp=bf16] [--library PATH]

One training step as bench/throughput.py runs it (so the backend builds a plan for every
convolution geometry the step meets), then, per geometry, the implementation oneDNN chose for
the forward, backward-data and backward-weights passes ("matmul ..." where the backend puts a
weight gradient on oneDNN's matmul), and a count of passes by implementation. ``--library``:
also the choice of another oneDNN 3.x library (a ``libdnnl.so.3``) for the same geometries,
built but not run: whether a newer oneDNN would change the kernels on this CPU. ``--time-weights``:
per bf16 channels-last geometry (groups 1, no bias), a weight-gradient pass timed on the
convolution's own kernel and on the backend's matmul (gathered taps where strided or kxk), with
the backend's choice, its GFLOP/s and the calls a step: the evidence for ``MATMUL_PIXELS`` and
``GATHER_PIXELS`` in backend/_dnnl.py, to be re-read on another CPU. The ``onednn``
wheel on PyPI is built on the SYCL runtime; its CPU engine needs the OpenCL CPU runtime it
installs: ``OCL_ICD_FILENAMES=PREFIX/lib/libintelocl.so LD_LIBRARY_PATH=PREFIX/lib``.

A benchmark, not a test: what it prints depends on the CPU. Measurements: docs/speed.md.
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paddle

from backend import _dnnl, onednn
from bench.throughput import setup
from bench.timing import timed

PASSES = ("forward", "backward_data", "backward_weights")


def conv_geometries() -> dict[tuple, _dnnl.ConvPlan]:
    """The convolution plans the backend has built in this process, by their cache key."""
    return {key: plan for key, plan in onednn._PLANS.items() if isinstance(plan, _dnnl.ConvPlan)}


def rebuild(dnnl: _dnnl.Dnnl, key: tuple) -> _dnnl.ConvPlan:
    """The plan for ``key`` built again, from the same arguments, on another loaded library."""
    return _dnnl.ConvPlan(dnnl, *onednn._PLAN_ARGS[key])


def weight_gradient_calls(train_step) -> collections.Counter:
    """How many weight gradients each plan computes in one ``train_step``."""
    calls, backward = collections.Counter(), _dnnl.ConvPlan.backward

    def counting(plan, x, w, dy, need_dx, need_weights):
        calls[id(plan)] += need_weights
        return backward(plan, x, w, dy, need_dx, need_weights)

    _dnnl.ConvPlan.backward = counting
    try:
        train_step()
    finally:
        _dnnl.ConvPlan.backward = backward
    return calls


def time_weight_gradients(key: tuple, plan: _dnnl.ConvPlan, repeats: int) -> tuple[float, float | None]:
    """(ms, ms or None): one weight-gradient pass of ``plan`` on random data, median of
    ``repeats``, on the convolution's kernel and on the matmul (None: no matmul for this
    geometry), the two interleaved call by call (the order alternating) so that a shared
    machine's busy spells fall on both."""
    (n, ci, h, w), w_shape, _, stride, padding, *_ = key
    chosen = plan.weights_matmul
    try:
        matmul = chosen or _dnnl._WeightGradientMatmul(onednn._DNNL, [n, ci, h, w], list(w_shape), stride,
                                                        padding, plan.shapes["y"][1:3])
    except RuntimeError:
        matmul = None
    x = paddle.randn(plan.shapes["x"]).astype(plan.dtypes["x"])
    dy = paddle.randn(plan.shapes["y"]).astype(plan.dtypes["y"])
    _, x_keep, w_keep = plan.forward(x, paddle.randn(list(w_shape)) * 0.05, None)
    paths = (None, matmul) if matmul else (None,)
    seconds = {path: [] for path in paths}
    try:
        for r in range(repeats + 1):  # the first round warms both paths up
            for path in paths if r % 2 else paths[::-1]:
                plan.weights_matmul = path
                took = timed(lambda: plan.backward(x_keep, w_keep, dy, False, True), 1)
                if r:
                    seconds[path] += took
    finally:
        plan.weights_matmul = chosen
    conv, *rest = (1000 * statistics.median(seconds[path]) for path in paths)
    return conv, (rest[0] if rest else None)


def weight_gradient_flops(key: tuple, plan: _dnnl.ConvPlan) -> int:
    """Multiplies and adds of one weight gradient: 2 x output pixels x Co x Ci x kh x kw."""
    _, (_, ci, kh, kw), *_ = key
    n, ho, wo, co = plan.shapes["y"]  # channels-last
    return 2 * n * ho * wo * co * ci * kh * kw


def describe(key: tuple) -> str:
    (n, ci, h, w), (co, _, kh, kw), _, stride, *_ = key
    return f"{ci}->{co} {kh}x{kw}/{stride[0]} on {h}x{w} (batch {n}){' bf16' if key[7] else ''}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--library", help="another libdnnl.so.3: its kernel choice for the same geometries")
    p.add_argument("--time-weights", type=int, metavar="REPEATS", default=0,
                   help="also time each bf16 weight gradient on the conv kernel and on the matmul")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    if args.time_weights < 0:
        print(f"error: --time-weights takes a number of calls to time, got {args.time_weights}", file=sys.stderr)
        return 2
    if not onednn.available():
        print(f"error: the oneDNN backend is not available here ({onednn._LOAD_ERROR or 'see backend/onednn.py'})",
              file=sys.stderr)
        return 2
    _, _, (_, train_step, _, _) = setup(args.model, args.image_size, args.batch_size, override=args.override)
    train_step()
    plans = conv_geometries()
    libraries = {"wheel": {key: plan.implementations for key, plan in plans.items()}}
    if args.library:
        # A second oneDNN in one process: its own symbols first, so it never calls into the wheel's.
        try:
            other = _dnnl.Dnnl(args.library, mode=os.RTLD_DEEPBIND | ctypes.RTLD_LOCAL)
        except (OSError, RuntimeError) as e:
            print(f"error: --library {args.library}: {e}", file=sys.stderr)
            return 2
        version = other.lib.dnnl_version().contents
        name = f"{Path(args.library).name} {version.major}.{version.minor}.{version.patch}"
        libraries[name] = {key: rebuild(other, key).implementations for key in plans}
    version = onednn._DNNL.lib.dnnl_version().contents
    print(f"{args.model} {args.image_size} px, batch {args.batch_size}{''.join(', ' + o for o in args.override)}; "
          f"wheel = Paddle's oneDNN {version.major}.{version.minor}.{version.patch}")
    for key in sorted(plans, key=lambda k: (k[0][2], k[1][2], k[0][1], k[1][0])):
        print(describe(key))
        for name, impls in libraries.items():
            print(f"  {name:>18}: " + " | ".join(f"{impls[key][p]}" for p in PASSES))
    for name, impls in libraries.items():
        counts = collections.Counter((p, impl[p]) for impl in impls.values() for p in PASSES)
        print(f"{name}, passes by implementation (distinct geometries):")
        for (pass_, impl), count in sorted(counts.items()):
            print(f"  {pass_:>16} {impl}: {count}")
    if args.time_weights:
        timeable = {key: plan for key, plan in plans.items()  # bf16, channels-last, no bias, groups 1, dilation 1
                    if key[7] and key[-1] and not key[2] and key[6] == 1 and key[5] == (1, 1)}
        if not timeable:
            print("--time-weights: no bf16 channels-last convolution in this step (-o train.amp=bf16?)")
            return 0
        calls = weight_gradient_calls(train_step)
        print(f"weight gradients, ms a call (median of {args.time_weights}): convolution kernel / matmul, "
              "the backend's choice, its GFLOP/s (bench/bf16_peak.py: the CPU's bf16 peak), calls a step")
        total = {"conv": 0.0, "chosen": 0.0, "faster": 0.0}
        step_flops = 0
        for key in sorted(timeable, key=lambda k: (k[0][2], k[1][2], k[0][1], k[1][0])):
            plan = timeable[key]
            conv, matmul = time_weight_gradients(key, plan, args.time_weights)
            chosen = matmul if plan.weights_matmul is not None else conv
            n = calls[id(plan)]
            total["conv"] += n * conv
            total["chosen"] += n * chosen
            total["faster"] += n * min(conv, matmul or conv)
            flops = weight_gradient_flops(key, plan)
            step_flops += n * flops
            shown = "n/a" if matmul is None else f"{matmul:.2f}"
            print(f"  {describe(key)}: {conv:.2f} / {shown}  {'matmul' if plan.weights_matmul else 'conv'}"
                  f"  {flops / chosen / 1e6:.0f}  x{n}")
        print(f"a step: {total['conv']:.1f} ms all on the convolution kernel, {total['chosen']:.1f} as chosen "
              f"({step_flops / total['chosen'] / 1e6:.0f} GFLOP/s over {step_flops / 1e9:.1f} GFLOP), "
              f"{total['faster']:.1f} with the faster of the two everywhere")
    return 0


if __name__ == "__main__":
    sys.exit(main())
