"""Which images to show: the same eval images for every run of a split, spread over the classes."""
from __future__ import annotations

import numpy as np


def pick_images(samples: list, classes: list, n: int, seed: int = 0) -> list:
    """``n`` (path, label) eval samples spread over the classes: classes in a seeded order,
    one random image of each in turn. The same split and seed give the same images."""
    rng = np.random.default_rng(seed)
    by_class = {c: [s for s in samples if s[1] == c] for c in range(len(classes))}
    order = [c for c in rng.permutation(len(classes)) if by_class[int(c)]]
    pools = {int(c): list(rng.permutation(len(by_class[int(c)]))) for c in order}
    picked = []
    while len(picked) < min(n, len(samples)):
        for c in order:
            if pools[int(c)] and len(picked) < n:
                picked.append(by_class[int(c)][pools[int(c)].pop(0)])
    return picked
