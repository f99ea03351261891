"""Where one training step goes: forward, backward, optimizer, clearing the gradients, and
(``--onednn``) the oneDNN primitives of one step, summed by kind.

The model is built and stepped as bench/throughput.py does (hapi ``train_batch`` on a fixed
random batch). The phases are timed by wrapping the network's forward (hooks),
``Optimizer.minimize`` and ``Layer.clear_gradients``; "backward" is the rest of the step
(loss, backward, hapi's own work). ``--onednn`` re-runs itself with
``ONEDNN_VERBOSE=profile_exec`` and sums the primitives of the last step by kind and pass
(reorders by source and destination memory), which shows how much of the step runs inside
oneDNN and on what.

  python bench/step_profile.py --model resnet50 --image-size 128 -o train.amp=bf16 --onednn

A benchmark, not a test: figures depend on the machine. Measurements: docs/speed.md.
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import app  # noqa: F401  (environment defaults; must come before paddle)

# isort: split
import paddle

from bench.throughput import setup

MARK = "step-profile: last step"
WARMUP = 3


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=6, help="timed steps after the warm-up")
    p.add_argument("--onednn", action="store_true", help="also the oneDNN primitives of one step")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--verbose-child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def phases(args) -> dict:
    """Mean milliseconds a step of each phase over ``args.steps`` steps after the warm-up."""
    spent = collections.Counter()
    calls = collections.Counter()

    def timing(name, fn):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - start
                calls[name] += 1
        return wrapper

    paddle.optimizer.Optimizer.minimize = timing("optimizer", paddle.optimizer.Optimizer.minimize)
    paddle.nn.Layer.clear_gradients = timing("clear gradients", paddle.nn.Layer.clear_gradients)
    _, _, (network, train_step, _, _) = setup(args.model, args.image_size, args.batch_size,
                                              override=args.override)
    started = [0.0]

    def forward_started(layer, inputs):
        started[0] = time.perf_counter()

    def forward_ended(layer, inputs, out):
        spent["forward"] += time.perf_counter() - started[0]

    network.register_forward_pre_hook(forward_started)
    network.register_forward_post_hook(forward_ended)
    for _ in range(WARMUP):
        train_step()
    if args.verbose_child:
        print(MARK, flush=True)
        train_step()
        return {}
    spent.clear()
    calls.clear()
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step()
    step = (time.perf_counter() - start) / args.steps
    if calls["optimizer"] != args.steps:
        raise SystemExit(f"the optimizer was timed {calls['optimizer']} times in {args.steps} steps")
    ms = {k: 1e3 * v / args.steps for k, v in spent.items()}
    ms["backward and the rest"] = 1e3 * step - sum(ms.values())
    return {"step": 1e3 * step, **ms}


def onednn_primitives(argv) -> tuple[float, list]:
    """(oneDNN ms in one step, [(ms, calls, what)] largest first) from a child process."""
    env = {**os.environ, "ONEDNN_VERBOSE": "profile_exec"}
    out = subprocess.run([sys.executable, __file__, *argv, "--verbose-child"], env=env,
                         capture_output=True, text=True, check=True).stdout
    lines = out.split(MARK, 1)[1].splitlines()
    spent, calls = collections.Counter(), collections.Counter()
    for line in lines:
        fields = line.split(",")
        if not line.startswith("onednn_verbose") or len(fields) < 12 or fields[3] != "exec":
            continue
        kind, pass_, memories = fields[5], fields[7], fields[8]
        what = f"reorder {memories}" if kind == "reorder" else f"{kind} {pass_}"
        spent[what] += float(fields[-1])
        calls[what] += 1
    return sum(spent.values()), sorted(((v, calls[k], k) for k, v in spent.items()), reverse=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    times = phases(args)
    if args.verbose_child:
        return 0
    print(f"{args.model} {args.image_size} px, batch {args.batch_size}, "
          f"{' '.join(args.override) or 'fp32'}; mean of {args.steps} steps, ms:")
    for name, ms in times.items():
        print(f"  {name:24s} {ms:8.1f}")
    if args.onednn:
        total, rows = onednn_primitives([a for a in argv if a != "--onednn"])
        print(f"oneDNN in one step: {total:.1f} ms (ONEDNN_VERBOSE=profile_exec; slower than "
              f"unprofiled)")
        for ms, n, what in rows:
            if ms >= 0.5:
                print(f"  {ms:8.1f} ms {n:4d} calls  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
