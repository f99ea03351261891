"""Step timing shared by bench/throughput.py and its PyTorch child, bench/torch_towernet.py.

Standard library only, so that neither process imports the other's framework.
"""
from __future__ import annotations

import time


def timed(fn, steps: int) -> list[float]:
    """Seconds each of ``steps`` calls of ``fn`` took."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times
