"""Paired comparisons of two models: is the gap bigger than the noise?

Over the units (seeds, or seed x fold runs): :func:`paired_verdict`, the mean paired
difference of final top-1 with its 95% Student t interval.

On the images:
A study's unit is one (seed, fold): both models trained on the same data and evaluated on the
same images, ``correct_a[u]`` / ``correct_b[u]`` boolean per image, aligned.

- :func:`paired_bootstrap`: the accuracy difference with a 95% percentile interval from a
  two-level bootstrap -- resample the units, then the images within each resampled unit
  (Bouthillier et al., MLSys 2021: the data split and the seed are both sources of variance;
  Agarwal et al., NeurIPS 2021: bootstrap intervals when runs are few). With one unit it is
  the image-level bootstrap alone, which ignores seed noise: the report says so.
- :func:`p_outperform`: P(A > B), the probability that A beats B on a new split and seed
  (Bouthillier et al.), estimated over the units (a tie counts half), with a Wilson
  interval over the units.
- :func:`mcnemar_exact`: McNemar's exact test on the discordant images (Dietterich 1998).
- :func:`mde_pp`: the smallest difference this design detects with 80% power at the 5%
  level, 2.8 standard errors; :func:`units_needed` scales the unit count to resolve a gap.
"""
from __future__ import annotations

import math

import numpy as np

from app.study import decide

Z95, Z80 = 1.959964, 0.841621


def _as_units(units) -> list[np.ndarray]:
    return [np.asarray(u, dtype=float) for u in units]


def paired_bootstrap(correct_a, correct_b, reps: int = 2000, seed: int = 0) -> dict:
    """Mean of per-unit accuracy differences (A - B, points) with a two-level bootstrap CI.

    ``correct_a`` / ``correct_b``: lists (one per unit) of aligned 0/1 arrays.
    Returns ``{"mean_pp", "ci95_pp": [lo, hi], "se_pp", "units", "images"}``.
    """
    diffs = [a - b for a, b in zip(_as_units(correct_a), _as_units(correct_b))]
    point = float(np.mean([d.mean() for d in diffs]))
    rng = np.random.default_rng(seed)
    stats = np.empty(reps)
    n_units = len(diffs)
    for r in range(reps):
        picked = rng.integers(0, n_units, n_units) if n_units > 1 else [0]
        stats[r] = np.mean([diffs[u][rng.integers(0, len(diffs[u]), len(diffs[u]))].mean()
                            for u in picked])
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return {"mean_pp": 100 * point, "ci95_pp": [100 * float(lo), 100 * float(hi)],
            "se_pp": 100 * float(stats.std(ddof=1)), "units": n_units,
            "images": int(sum(len(d) for d in diffs))}


def p_outperform(correct_a, correct_b) -> dict:
    """P(A > B) over the units (ties half) with a Wilson score interval (app.study.decide):
    ``{"p", "ci95", "units"}``. Two units that agree give 1.00 with 0.34-1.00, not certainty."""
    gaps = [np.mean(a) - np.mean(b) for a, b in zip(_as_units(correct_a), _as_units(correct_b))]
    result = decide.p_outperform(gaps)
    return {"p": result["p"], "ci95": result["ci"], "units": result["units"]}


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p: ``b`` images only B gets right, ``c`` only A."""
    n = b + c
    if n == 0:
        return 1.0
    # P(X <= k) for X ~ Binomial(n, 1/2) in integers: 2.0 ** n overflows a float past 1,023
    # discordant images, an int does not, and int / int rounds once (100,000 images: ~1 s).
    k = min(b, c)
    term = total = 1
    for i in range(k):
        term = term * (n - i) // (i + 1)
        total += term
    tail = total / (1 << n)
    return min(1.0, 2.0 * tail)


def discordant(correct_a, correct_b) -> list[int]:
    """[B-only right, A-only right] summed over the units."""
    a = np.concatenate(_as_units(correct_a)).astype(bool)
    b = np.concatenate(_as_units(correct_b)).astype(bool)
    return [int((b & ~a).sum()), int((a & ~b).sum())]


def mde_pp(se_pp: float) -> float:
    """Minimum detectable difference (points) at 80% power, two-sided 5%: (1.96 + 0.84) SE."""
    return (Z95 + Z80) * se_pp


def units_needed(units: int, se_pp: float, gap_pp: float) -> int | None:
    """Roughly how many units (seeds x folds) make ``gap_pp`` detectable (SE ~ 1/sqrt(units))."""
    if gap_pp == 0 or not np.isfinite(gap_pp):
        return None
    return int(math.ceil(units * (mde_pp(se_pp) / abs(gap_pp)) ** 2))


def compare(correct_a, correct_b, name: str, baseline: str, seed: int = 0) -> dict:
    """Everything the report says about A against B on paired predictions."""
    boot = paired_bootstrap(correct_a, correct_b, seed=seed)
    out = {"bootstrap_ci95_pp": boot["ci95_pp"], "bootstrap_mean_pp": boot["mean_pp"],
           "bootstrap_units": boot["units"], "bootstrap_images": boot["images"],
           "p_outperform": p_outperform(correct_a, correct_b),
           "discordant": discordant(correct_a, correct_b),
           "mde_pp": mde_pp(boot["se_pp"])}
    out["mcnemar_p"] = mcnemar_exact(*out["discordant"])
    out["mcnemar_p_per_unit"] = [mcnemar_exact(*discordant([a], [b]))
                                 for a, b in zip(correct_a, correct_b)]
    lo, hi = boot["ci95_pp"]
    gap = boot["mean_pp"]
    if lo > 0 or hi < 0:
        out["verdict_bootstrap"] = (f"{name} {'beats' if gap > 0 else 'trails'} {baseline} by "
                                    f"{abs(gap):.1f} points (95% CI {lo:+.1f} to {hi:+.1f}; "
                                    f"McNemar p = {out['mcnemar_p']:.3g}).")
    else:
        need = units_needed(boot["units"], boot["se_pp"], gap)
        more = (f"; resolving a {abs(gap):.1f}-point gap would take ~{need} seeds x folds"
                if need else "")
        out["verdict_bootstrap"] = (f"no detectable difference between {name} and {baseline}: "
                                    f"{gap:+.1f} points (95% CI {lo:+.1f} to {hi:+.1f}); gaps "
                                    f"under {out['mde_pp']:.1f} points cannot be detected with "
                                    f"this study{more}.")
    if boot["units"] == 1:
        out["verdict_bootstrap"] += (" One seed and split only: the interval covers image "
                                     "sampling, not seed or split noise.")
    return out


# Two-sided 95% Student t quantiles by degrees of freedom (df > 30: normal).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}


def t95(df: int) -> float:
    if df > 30:
        return 1.96
    return T95.get(df) or T95[min(k for k in T95 if k >= df)]


def paired_verdict(diffs: list, name: str, baseline: str, unit: str = "seeds") -> dict:
    """Mean paired difference (percentage points) over seeds (or seed x fold runs, ``unit``),
    its 95% t interval, and plain words."""
    d = np.asarray(diffs, dtype=float) * 100
    out = {"n": len(d), "mean_pp": float(d.mean()) if len(d) else None, "diffs_pp": d.tolist()}
    if len(d) < 2:
        out["verdict"] = (f"{len(d)} paired {unit}: too few to tell {name} from {baseline} "
                          f"beyond seed noise; run at least 3 seeds.")
        return out
    if np.ptp(d) < 1e-9:
        # Every unit moved by the same amount (on a few hundred eval images, one image more or
        # less per seed is common): the spread is measured as 0 and the t interval would be a
        # point, calling any such gap "larger than the run-to-run spread". No interval.
        out["verdict"] = (f"{name} - {baseline} = {d.mean():+.1f} points in each of the {len(d)} "
                          f"{unit}: with no spread between them the t interval cannot be "
                          f"computed, so the seeds alone cannot tell this gap from noise "
                          f"(see the per-image statistics, or run more {unit}).")
        return out
    half = t95(len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    lo, hi = d.mean() - half, d.mean() + half
    out.update(ci95_pp=[float(lo), float(hi)])
    if lo > 0 or hi < 0:
        word = "better" if lo > 0 else "worse"
        out["verdict"] = (f"{name} is {word} than {baseline} by {abs(d.mean()):.1f} points "
                          f"(95% interval {lo:+.1f} to {hi:+.1f} over {len(d)} {unit}): the gap "
                          f"is larger than the run-to-run spread.")
    else:
        out["verdict"] = (f"no clear difference: {name} - {baseline} = {d.mean():+.1f} points, "
                          f"but the 95% interval ({lo:+.1f} to {hi:+.1f}) over {len(d)} {unit} "
                          f"includes 0, so the gap is within run-to-run noise.")
    return out


def sample_std(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
