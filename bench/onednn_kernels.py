"""Which oneDNN kernel runs each convolution pass of a model's training step, on this CPU.

    python bench/onednn_kernels.py --model resnet50 [--image-size 128] [--batch-size 32]
                                   [-o train.amp=bf16] [--library PATH]

One training step as bench/throughput.py runs it (so the backend builds a plan for every
convolution geometry the step meets), then, per geometry, the implementation oneDNN chose for
the forward, backward-data and backward-weights passes ("matmul ..." where the backend puts a
weight gradient on oneDNN's matmul), and a count of passes by implementation. ``--library``:
also the choice of another oneDNN 3.x library (a ``libdnnl.so.3``) for the same geometries,
built but not run: whether a newer oneDNN would change the kernels on this CPU. The ``onednn``
wheel on PyPI is built on the SYCL runtime; its CPU engine needs the OpenCL CPU runtime it
installs: ``OCL_ICD_FILENAMES=PREFIX/lib/libintelocl.so LD_LIBRARY_PATH=PREFIX/lib``.

A benchmark, not a test: what it prints depends on the CPU. Measurements: docs/speed.md.
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend import _dnnl, onednn
from bench.throughput import setup

PASSES = ("forward", "backward_data", "backward_weights")


def conv_geometries() -> dict[tuple, _dnnl.ConvPlan]:
    """The convolution plans the backend has built in this process, by their cache key."""
    return {key: plan for key, plan in onednn._PLANS.items() if isinstance(plan, _dnnl.ConvPlan)}


def rebuild(dnnl: _dnnl.Dnnl, key: tuple) -> _dnnl.ConvPlan:
    """The plan for ``key`` built again, from the same arguments, on another loaded library."""
    return _dnnl.ConvPlan(dnnl, *onednn._PLAN_ARGS[key])


def describe(key: tuple) -> str:
    (n, ci, h, w), (co, _, kh, kw), _, stride, *_ = key
    return f"{ci}->{co} {kh}x{kw}/{stride[0]} on {h}x{w} (batch {n}){' bf16' if key[7] else ''}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--library", help="another libdnnl.so.3: its kernel choice for the same geometries")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
