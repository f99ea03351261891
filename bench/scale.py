"""How the cost of an epoch grows with the data: images, classes, image size, cache, workers.

    python bench/scale.py --data SPLIT [SPLIT ...] [--sizes 128,224] [--model towernet_simam]
                          [--workers 0,1] [--json OUT.json]

For every split x image size x ``data.cache`` (true / false), and without the cache also for
every ``data.num_workers``, it runs ``train.py`` for one epoch in a fresh process, as a user
would, and reads back: the epoch's seconds and train images/s (metrics.csv), the process's
wall time (decoding the cache included) and its peak resident memory (``wait4``'s
ru_maxrss; loader workers are processes of their own and not counted in it). One row per
run; a benchmark, not a test: figures depend on the machine.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_epoch(data: str, size: int, cache: str, workers: int, model: str, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, str(ROOT / "train.py"), "--model", model, "--data", data,
               "--image-size", str(size), "--epochs", "1", "--batch-size", str(batch),
               "--output", out, "-o", f"data.cache={cache}", "-o", f"data.num_workers={workers}",
               "-o", "log.images=false"]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        stdout, stderr = proc.stdout.read(), proc.stderr.read()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{stderr[-2000:]}")
        (metrics,) = Path(out).rglob("metrics.csv")
        row = next(csv.DictReader(open(metrics)))
        manifest = json.loads((Path(data) / "manifest.json").read_text())
        note = next((line for line in stdout.splitlines() if line.startswith("data.cache")), "")
        return {"split": Path(data).name, "classes": len(manifest["classes"]),
                "train_images": sum(c["train"] for c in manifest["counts"].values()), "image_size": size,
                "cache": cache, "workers": workers, "epoch_s": float(row["epoch_seconds"]),
                "train_img_s": float(row["train_images_per_s"]), "wall_s": wall,
                "peak_rss_mb": usage.ru_maxrss / 1024, "note": note}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", required=True, help="split folders, small to large")
    p.add_argument("--sizes", default="128,224")
    p.add_argument("--model", default="towernet_simam")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", default="0,1", help="data.num_workers tried without the cache")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    rows = []
    print(f"{'split':<10}{'classes':>8}{'images':>8}{'px':>5}{'cache':>7}{'workers':>8}"
          f"{'epoch s':>9}{'img/s':>8}{'wall s':>8}{'peak RSS MB':>12}", flush=True)
    for data in args.data:
        for size in map(int, args.sizes.split(",")):
            runs = [("true", 0)] + [("false", int(w)) for w in args.workers.split(",")]
            for cache, workers in runs:
                r = one_epoch(data, size, cache, workers, args.model, args.batch_size)
                rows.append(r)
                print(f"{r['split']:<10}{r['classes']:>8}{r['train_images']:>8}{size:>5}"
                      f"{cache:>7}{workers:>8}{r['epoch_s']:>9.1f}{r['train_img_s']:>8.1f}"
                      f"{r['wall_s']:>8.1f}{r['peak_rss_mb']:>12.0f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
