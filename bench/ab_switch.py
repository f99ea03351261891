"""In-process A/B of one training step with a backend switch toggled every round.

    python bench/ab_switch.py [--model mobilenet_v2] [--switch TOWERNET_FUSED] [--rounds 12] [--steps 3]

One network, built and stepped as ``train.py`` does (``throughput.setup``), runs
``--steps`` steps with the environment variable ``--switch`` at 0 and then at 1 (the order
alternating by round), ``--rounds`` times. Both sides share the process, the weights' memory
and each busy spell of a shared machine, so the per-round ratio off/on is far steadier than
two separate ``throughput.py`` runs. The switches the backend reads on every call:
``TOWERNET_FUSED`` (backend/fused.py), ``TOWERNET_ONEDNN`` (backend/onednn.py) and
``TOWERNET_WEIGHTS_GATHER`` (backend/_dnnl.py: strided bf16 weight gradients on the gathered
matmul, 0: on the convolution kernel). A benchmark, not a test. Figures: docs/speed.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import app  # noqa: F401  (environment defaults; must come before paddle)

# isort: split

from app.util.errors import UserError, exit_on_user_error
from bench.throughput import setup
from bench.timing import timed

SWITCHES = ("TOWERNET_FUSED", "TOWERNET_ONEDNN", "TOWERNET_WEIGHTS_GATHER")


def run(args) -> dict:
    _, _, (_, train_step, _, _) = setup(args.model, args.image_size, args.batch_size, override=args.override)
    before = os.environ.get(args.switch)
    ms = {"0": [], "1": []}
    try:
        for value in ("0", "1"):  # warm both paths (plans, the kernel's build)
            os.environ[args.switch] = value
            timed(train_step, 2)
        for r in range(args.rounds):
            for value in ("1", "0") if r % 2 == 0 else ("0", "1"):
                os.environ[args.switch] = value
                ms[value].append(1000 * statistics.median(timed(train_step, args.steps)))
    finally:
        if before is None:
            os.environ.pop(args.switch, None)
        else:
            os.environ[args.switch] = before
    ratios = [off / on for off, on in zip(ms["0"], ms["1"])]
    return {"model": args.model, "switch": args.switch, "off_ms": ms["0"], "on_ms": ms["1"],
            "off_median_ms": statistics.median(ms["0"]), "on_median_ms": statistics.median(ms["1"]),
            "off_over_on_median": statistics.median(ratios), "rounds_on_faster": sum(r > 1 for r in ratios)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenet_v2")
    p.add_argument("--switch", default="TOWERNET_FUSED", choices=SWITCHES)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--steps", type=int, default=3, help="steps per round and side (median taken)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        raise UserError("--rounds and --steps must be at least 1")
    r = run(args)
    print(f"{r['model']} {args.image_size} px batch {args.batch_size}: {r['switch']}=0 step median "
          f"{r['off_median_ms']:.1f} ms, {r['switch']}=1 {r['on_median_ms']:.1f} ms; per round 0/1: median "
          f"{r['off_over_on_median']:.3f}x, {r['rounds_on_faster']}/{args.rounds} rounds faster with 1")
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_user_error(main))
