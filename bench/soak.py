"""Does resident memory stay flat over a long run? A soak test of the real training app.

    python bench/soak.py [--epochs 100] [--model towernet_simam] [--image-size 64] [--json]

Generates a small 4-class split (48 images), runs ``train.py`` on it for ``--epochs`` epochs
(3 steps + an eval + checkpoints + VisualDL records and images every epoch, attention maps
every 5), samples the child's resident set size (VmRSS) twice a second, and prints it at
every tenth of the run, with the growth per 100 epochs fitted over the second half (after
warm-up: primitive caches, allocator pools). Everything on the training path is included:
oneDNN plans, the VisualDL writer, the image cache, checkpoints.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--model", default="towernet_simam")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from data_tools.demo import make_demo_images
    from data_tools.split import split_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_demo_images(tmp / "src", num_classes=4, per_class=12, seed=0, size_range=(64, 96))
        split_dataset(tmp / "src", tmp / "split", eval_ratio=0.25, seed=0, progress=False)
        cmd = [sys.executable, "train.py", "--model", args.model, "--data", tmp / "split",
               "--epochs", args.epochs, "--image-size", args.image_size, "--batch-size", "12",
               "--output", tmp / "runs", "-o", "log.attention_every=5"]
        start = time.perf_counter()
        proc = subprocess.Popen(list(map(str, cmd)), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        samples, epochs_seen = [], 0
        os.set_blocking(proc.stdout.fileno(), False)
        while proc.poll() is None:
            for line in iter(proc.stdout.readline, ""):
                if line.startswith("epoch "):
                    epochs_seen = int(line.split()[1].split("/")[0])
            rss = rss_mb(proc.pid)
            if rss is not None and epochs_seen:
                samples.append((time.perf_counter() - start, epochs_seen, rss))
            time.sleep(0.5)
        if proc.returncode != 0 or not samples:
            print(f"train.py exited {proc.returncode}", file=sys.stderr)
            return 1
    t, ep, rss = map(np.asarray, zip(*samples))
    late = ep >= ep.max() / 2
    slope = float(np.polyfit(ep[late], rss[late], 1)[0]) * 100 if late.sum() > 2 else float("nan")
    marks = [int(np.argmin(np.abs(ep - ep.max() * k / 10))) for k in range(1, 11)]
    result = {"model": args.model, "epochs": int(ep.max()), "steps": int(ep.max()) * 3,
              "rss_mb_at": {int(ep[i]): round(float(rss[i]), 1) for i in marks},
              "rss_mb_max": round(float(rss.max()), 1),
              "growth_mb_per_100_epochs_second_half": round(slope, 2),
              "seconds": round(float(t.max()), 1)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model}, {result['epochs']} epochs ({result['steps']} steps, an eval and "
              f"checkpoints each), {result['seconds']} s")
        print("epoch  RSS MB")
        for e, v in result["rss_mb_at"].items():
            print(f"{e:5d}  {v:7.1f}")
        print(f"growth over the second half: {result['growth_mb_per_100_epochs_second_half']:+.2f} "
              f"MB per 100 epochs (max {result['rss_mb_max']} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
