"""Studies on generated data: how often the decision rule errs, and how many units it takes.

A generated unit is one seed x fold: ``images`` eval images that the baseline B gets right
with probability ``accuracy``; a share ``discordant`` of them is got right by exactly one of A
and B, and of those A's share is ``1/2 + (gap + e) / (2 * discordant)``, where ``gap`` is the
true gain of A and ``e ~ N(0, unit_sd)`` the unit's own deviation (seed and split). A unit's
measured gap therefore carries both image noise (binomial, as real eval sets do) and unit
noise. :func:`fit` takes the three from a real study's report.json: the discordant share from
its discordant image counts, the unit deviation from what the per-unit gaps vary beyond image
noise.

:func:`run_sequential` replays the decision rule of app/study/decide.py on many generated
studies at once (vectorised; equal to :func:`app.study.decide.decide` on each, which the tests
check), :func:`run_fixed` a one-look study of ``n`` units.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from app.study.decide import Plan, classify, running_mean_sd


@dataclass(frozen=True)
class UnitModel:
    images: int = 363          # eval images per unit (one of five folds of 1817)
    accuracy: float = 0.85     # the baseline's top-1
    discordant: float = 0.095  # share of images exactly one of the two models gets right
    unit_sd: float = 0.3       # points: the units' own deviation beyond image noise

    def gap_sd(self) -> float:
        """The standard deviation of one unit's measured gap, points."""
        return math.sqrt(self.unit_sd ** 2 + 1e4 * self.discordant / self.images)


def fit(report: dict, images: int | None = None) -> UnitModel:
    """The unit model of a study's report.json: pooled over its comparisons of attention
    modules with their host (or all, if it has none) that carry per-image statistics."""
    rows = [m["vs_baseline"] for m in report["models"] if "vs_baseline" in m]
    rows += report.get("one_change", [])
    rows = [r for r in rows if "discordant" in r and len(r["diffs_pp"]) > 1]
    if not rows:
        raise ValueError("the report has no comparison with per-image statistics")
    per_unit = [r["bootstrap_images"] / r["bootstrap_units"] for r in rows]
    n = images or round(float(np.mean(per_unit)))
    q = float(np.mean([sum(r["discordant"]) / r["bootstrap_images"] for r in rows]))
    var_total = float(np.mean([np.var(r["diffs_pp"], ddof=1) for r in rows]))
    var_images = 1e4 * q / n
    accuracy = float(np.mean([m["final_mean"] for m in report["models"]]))
    return UnitModel(n, accuracy, q, math.sqrt(max(0.0, var_total - var_images)))


def unit_gaps(model: UnitModel, gap_pp: float, studies: int, units: int, rng) -> np.ndarray:
    """Measured per-unit gaps, points, [studies, units], drawn image by image (counts)."""
    n = model.images
    e = rng.normal(0.0, model.unit_sd, (studies, units))
    share = np.clip(0.5 + (gap_pp + e) / 100 / (2 * model.discordant), 0.0, 1.0)
    k = rng.binomial(n, model.discordant, (studies, units))
    a_only = rng.binomial(k, share)
    return 100.0 * (2 * a_only - k) / n


def unit_images(model: UnitModel, gap_pp: float, units: int, rng) -> tuple:
    """Per-image correctness of one generated study: (A's, B's), lists of bool arrays, drawn
    as :func:`unit_gaps` draws its counts (the other images: both right or both wrong)."""
    a_units, b_units, n = [], [], model.images
    for _ in range(units):
        share = min(1.0, max(0.0, 0.5 + (gap_pp + rng.normal(0.0, model.unit_sd)) / 100
                             / (2 * model.discordant)))
        k = rng.binomial(n, model.discordant)
        a_only = rng.binomial(k, share)
        b = rng.random(n) < model.accuracy
        a = b.copy()
        order = rng.permutation(n)
        a[order[:a_only]], b[order[:a_only]] = True, False
        a[order[a_only:k]], b[order[a_only:k]] = False, True
        a_units.append(a), b_units.append(b)
    return a_units, b_units


def intervals(gaps: np.ndarray, plan: Plan) -> tuple:
    """(looks, mean, lo, hi), each [studies, looks], of gaps [studies, units] under ``plan``."""
    looks = plan.looks(gaps.shape[1])
    mean, sd = running_mean_sd(gaps)
    idx = np.array(looks) - 1
    c = np.array([plan.critical_value(k) for k in looks])
    half = c * sd[:, idx] / np.sqrt(np.array(looks))
    return looks, mean[:, idx], mean[:, idx] - half, mean[:, idx] + half


def run_sequential(gaps: np.ndarray, margin: float, plan: Plan) -> tuple:
    """(verdicts, units used) of each generated study [studies, max units]: the first
    decided look's, else "undecided" after all units."""
    looks, _, lo, hi = intervals(gaps, plan)
    verdicts = np.full(len(gaps), "undecided", dtype=object)
    used = np.full(len(gaps), min(gaps.shape[1], plan.max_units or gaps.shape[1]))
    open_ = np.ones(len(gaps), bool)
    for k, n in enumerate(looks):
        words = np.array([classify(a, b, margin) for a, b in zip(lo[open_, k], hi[open_, k])],
                         dtype=object)
        rows = np.flatnonzero(open_)
        decided = words != "undecided"
        verdicts[rows[decided]], used[rows[decided]] = words[decided], n
        open_[rows[decided]] = False
        if not open_.any():
            break
    return verdicts, used


def run_fixed(gaps: np.ndarray, margin: float, n: int) -> np.ndarray:
    """Verdicts of one-look studies of the first ``n`` units (the t interval)."""
    _, _, lo, hi = intervals(gaps[:, :n], Plan())
    return np.array([classify(a, b, margin) for a, b in zip(lo[:, 0], hi[:, 0])], dtype=object)


def outcome(verdict: str) -> str:
    """A verdict's family: helps, hurts, cannot help (equivalence included) or undecided."""
    if verdict.startswith("helps"):
        return "helps"
    if verdict.startswith("hurts"):
        return "hurts"
    if verdict.startswith(("cannot", "equivalent")):
        return "cannot help"
    return "undecided"
