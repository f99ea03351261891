"""How much do independently trained runs disagree? (a diagnostic, on the images each run evaluates on)

    python experiments/error_overlap.py RUN_DIR [RUN_DIR ...]

Evaluates each run's last.pdparams (its final weights, as the study's "final top-1") on the
eval folder of the data it trained on, then compares the runs image by image: the mean
single-run top-1, the top-1 of their averaged probabilities (an ensemble), how many images
at least one run gets right, how many every run gets wrong, and the error rate per class.
If the ensemble is barely above a single run, the runs make the same mistakes, and no
change that only averages out run-to-run variation (EMA, SWA, distillation from an
ensemble) can add much.
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app.build.device import select_device
from app.build.loader import build_loader
from app.inspect.evaluate import eval_dataset, find_checkpoint, load_network
from app.inspect.predict import predict_probs


def main(runs) -> None:
    select_device("cpu", threads=1)
    probs, names = [], []
    for run in runs:
        weights, meta = find_checkpoint(checkpoint=Path(run) / "last.pdparams")
        ds = eval_dataset(meta)
        p, labels = predict_probs(load_network(weights, meta), build_loader(ds, 64, shuffle=False))
        probs.append(p)
        names.append(Path(run).name)
    probs = np.stack(probs)
    right = probs.argmax(2) == labels
    for name, r in zip(names, right):
        print(f"{name:40s} {r.mean():.4f}")
    print(f"runs: {len(probs)}, images: {len(labels)} ({meta['data_root']}/eval)")
    print(f"single run, mean top-1:        {right.mean():.4f}")
    print(f"ensemble (mean probabilities): {(probs.mean(0).argmax(1) == labels).mean():.4f}")
    print(f"at least one run right:        {right.any(0).mean():.4f}")
    every = ~right.any(0)
    print(f"every run wrong:               {every.sum()} images ({every.mean():.1%})")
    print(f"some runs wrong, not all:      {(right.any(0) & ~right.all(0)).sum()} images")
    print("errors per class (wrong predictions / images x runs):")
    wrong = (~right).sum(0)
    for c, name in enumerate(meta["classes"]):
        m = labels == c
        print(f"  {name:12s} {wrong[m].sum():4d} / {m.sum() * len(probs):4d}  "
              f"({wrong[m].sum() / (m.sum() * len(probs)):.1%})")


if __name__ == "__main__":
    main(sys.argv[1:])
