"""What going past a sequential plan costs: the false-call rate of a study that looked after
every unit from the 5th to FIRST under FIRST's plan, ended undecided, and then went on to LAST
under LAST's plan (``eval.py --compare --max-units LAST``).

    python experiments/plan_extension.py FIRST LAST [--studies 200000]

Prints, for a true gap of 0 and normal unit gaps (the t statistic does not depend on their
spread), how often some look calls "helps" or "hurts": under FIRST's plan alone, LAST's plan
alone (each 5% by construction), and the two joined; then one side of it, the error of an
equivalence or "cannot help by D" claim (a true gap of D whose interval ends below D at some
look: 2.5% by construction for each plan alone). The joined rate is above 5%: FIRST's plan
spent its whole 5% by its last look.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.study.decide import MIN_UNITS, abs_t_at_looks, critical_values


def false_calls(first: int, last: int, studies: int, seed: int = 0) -> dict:
    """Share of zero-gap studies with |t| > c at some look, for each of the three plans."""
    c_first = np.array(critical_values(MIN_UNITS, first))
    c_last = np.array(critical_values(MIN_UNITS, last))
    joined = np.concatenate([c_first, c_last[first - MIN_UNITS + 1:]])
    rng = np.random.default_rng(seed)
    hits = Counter()
    for size in [20_000] * (studies // 20_000) + [studies % 20_000]:
        gaps = rng.standard_normal((size, last))
        t = abs_t_at_looks(gaps, MIN_UNITS)
        below = t * (gaps.cumsum(axis=1)[:, MIN_UNITS - 1:] < 0)  # |t| where the mean is below 0
        for name, c in (("first", c_first), ("last", c_last), ("joined", joined)):
            hits[name] += int((t[:, :len(c)] > c).any(axis=1).sum())
            hits[name + "_one_side"] += int((below[:, :len(c)] > c).any(axis=1).sum())
    return {k: v / studies for k, v in hits.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("first", type=int)
    p.add_argument("last", type=int)
    p.add_argument("--studies", type=int, default=200_000)
    args = p.parse_args(argv)
    if not MIN_UNITS <= args.first < args.last:
        p.error(f"needs {MIN_UNITS} <= FIRST < LAST")
    rates = false_calls(args.first, args.last, args.studies)
    print(f"true gap 0, {args.studies} generated studies: \"helps\"/\"hurts\" called at some look")
    joined = (f"looks {MIN_UNITS}-{args.first} under the first, "
              f"{args.first + 1}-{args.last} under the second")
    rows = [(f"looks {MIN_UNITS}-{args.first}, the {args.first}-look plan", rates["first"]),
            (f"looks {MIN_UNITS}-{args.last}, the {args.last}-look plan", rates["last"]),
            (joined, rates["joined"])]
    for label, rate in rows:
        print(f"  {label:<50} {100 * rate:5.2f}%")
    print("one side (a true gap of D called \"cannot help by D\"; of -D, a loss of D ruled out)")
    for (label, _), key in zip(rows, ("first", "last", "joined")):
        print(f"  {label:<50} {100 * rates[key + '_one_side']:5.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
