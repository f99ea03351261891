"""Loader throughput: images/s of the train split, cold (decode every epoch) vs cached.

    python bench/loader.py --data /tmp/c16 [--image-size 256] [--batch-size 32]
                           [--num-workers 0,2] [--epochs 2] [--json]

Iterates a shuffled ``paddle.io.DataLoader`` over ``ImageFolderDataset(split="train")``
with augmentation on, as training does, and does nothing with the batches. "cold" means
JPEGs are decoded every epoch (the OS file cache is warm after the first pass, so this
measures decoding, not the disk). Workers are started afresh every epoch, as in training;
that start-up cost is included. A benchmark, not a test: figures depend on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_minloglevel", "2")

import paddle

from app.data.dataset import ImageFolderDataset
from app.util.errors import exit_on_user_error


def epoch_rates(ds, batch_size: int, num_workers: int, epochs: int) -> list[float]:
    """Images/s of each of ``epochs`` full passes over ``ds``."""
    loader = paddle.io.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=num_workers)
    rates = []
    for _ in range(epochs):
        start, seen = time.perf_counter(), 0
        for images, _labels in loader:
            seen += images.shape[0]
        rates.append(seen / (time.perf_counter() - start))
    return rates


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run(args) -> list[dict]:
    workers = [int(w) for w in args.num_workers.split(",")]
    common = dict(split="train", image_size=args.image_size)
    rows = []
    cold = ImageFolderDataset(args.data, **common)
    for w in workers:
        rates = epoch_rates(cold, args.batch_size, w, args.epochs)
        rows.append({"mode": "cold", "workers": w, "images": len(cold),
                     "images_per_s": sum(rates) / len(rates), "epochs": rates})
    rss_before = max_rss_mb()
    start = time.perf_counter()
    cached = ImageFolderDataset(args.data, cache=True, progress=not args.json, **common)
    build_s = time.perf_counter() - start
    cache_mb = cached.cache.nbytes / 2**20
    for w in workers:
        rates = epoch_rates(cached, args.batch_size, w, args.epochs)
        rows.append({"mode": "cached", "workers": w, "images": len(cached),
                     "images_per_s": sum(rates) / len(rates), "epochs": rates,
                     "cache_build_s": build_s, "cache_mb": cache_mb,
                     "rss_growth_mb": max_rss_mb() - rss_before})
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'mode':<7} {'workers':>7} {'images/s':>9}  per epoch        cache"]
    for r in rows:
        per = " ".join(f"{x:.0f}" for x in r["epochs"])
        cache = (f"built in {r['cache_build_s']:.1f}s, {r['cache_mb']:.0f} MB array, "
                 f"max RSS +{r['rss_growth_mb']:.0f} MB") if r["mode"] == "cached" else ""
        lines.append(f"{r['mode']:<7} {r['workers']:>7} {r['images_per_s']:>9.0f}  "
                     f"{per:<16} {cache}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a split folder (data_tools/split.py --dst)")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", default="0,2", help="comma-separated worker counts")
    p.add_argument("--epochs", type=int, default=2, help="epochs timed per setting")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    paddle.set_device("cpu")
    rows = run(args)
    if args.json:
        print(json.dumps({"data": args.data, "image_size": args.image_size, "rows": rows,
                          "batch_size": args.batch_size, "cpus": os.cpu_count()}, indent=1))
    else:
        print(format_table(rows))


if __name__ == "__main__":
    exit_on_user_error(main)
