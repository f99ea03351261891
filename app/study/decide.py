"""Decisions: does a change help, hurt, or not help by the margin that matters? Or is it open?

A study's unit is one seed (or one seed x fold): every model trained and evaluated on the
same data. The gap of a unit is the model's final eval top-1 minus its baseline's, in points;
the noise of the few hundred eval images is already in it. After ``n`` units the gap's
interval is

    mean(gap) +- c * sd(gap) / sqrt(n)

and with the margin ``D`` (the smallest gain that would matter) it reads, in this order:

    hurts                   the interval lies below 0 ("hurts by D or more" below -D)
    helps by D or more      it lies above D
    helps, by less than D   it lies between 0 and D
    helps                   it lies above 0 and reaches past D
    cannot help by D        it lies below D and reaches 0 or below ("equivalent within
                            +-D" when it also lies above -D)
    undecided               otherwise: it reaches both 0 and D

An undecided interval that lies above -D also rules out a loss of D or more (the report says
so; the mirror of "cannot help by D", with the same error bound); one that does not yet is
projected both ways: the units that would decide, and the fewer that would rule out the loss,
the question for a change meant to be harmless (a faster precision, a cheaper recipe). A
comparison is decided when its interval lies above 0 or below D. No decision comes from
fewer than ``MIN_UNITS`` units: the spread of four numbers is too uncertain to bound anything.

Repeated looks. A study run ``--until-decided`` looks after every unit from the
``MIN_UNITS``-th to its planned maximum and stops when it can; checking a plain 95% t interval
at every look would call a zero gap "helps" or "hurts" far more often than 5% of the time.
So each look ``n`` has its own ``c_n``, every look held to the same nominal level (Pocock's
design, on each look's own t distribution), calibrated by simulation (:func:`critical_values`):
over all planned looks, a true gap of 0 is called "helps" or "hurts" at most
``1 - confidence`` of the time, and a true gap of ``D`` is called "cannot help by D" at most
half that (one side of the same boundary). The t statistic does not depend on the gaps'
scale, so the ``c_n`` depend only on the look schedule. A comparison's decision is the
one at its first decided look, replayed from its units in unit order: it does not depend on
when anyone looked. A study with no plan (composed by hand, ``--seeds``/``--folds``) has one
look, at all its units, where ``c`` is the t quantile.

References: Pocock, "Group sequential methods in the design and analysis of clinical trials",
Biometrika 1977; Benavoli, Corani, Demsar, Zaffalon, "Time for a change", JMLR 2017 (a region
of practical equivalence); Bouthillier et al., "Accounting for variance in machine learning
benchmarks", MLSys 2021 (paired units over seeds and splits, P(A > B)).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from app.util.errors import UserError

MIN_UNITS = 5
DEFAULT_MARGIN = 2.0  # points of top-1
DEFAULT_MAX_UNITS = 20
CONFIDENCE = 0.95
_SIMULATIONS, _CHUNK = 200_000, 20_000


def ordinal(n: int) -> str:
    """5th, 21st, 22nd, 23rd, 111th."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def parse_margin(text) -> float | None:
    """``--margin`` as points of top-1 (None when not given); one line unless a number >= 0."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise UserError(f"--margin takes points of top-1, a number of 0 or more (e.g. 2); "
                        f"got {text!r}")
    return value


@dataclass(frozen=True)
class Plan:
    """When a study looks: after every unit from ``min_units`` to ``max_units`` (sequential),
    or once, at all its units (``max_units`` None: a study composed by hand)."""
    max_units: int | None = None
    min_units: int = MIN_UNITS
    confidence: float = CONFIDENCE

    def looks(self, n: int) -> list:
        """The looks a study with ``n`` units has had."""
        if self.max_units is None:
            return [n] if n >= self.min_units else []
        return list(range(self.min_units, min(n, self.max_units) + 1))

    def critical_value(self, n: int) -> float:
        """``c`` at a look with ``n`` units."""
        if self.max_units is None:
            return critical_value(n, n, self.confidence)
        return critical_value(self.min_units, self.max_units, self.confidence, n)

    def describe(self) -> str:
        if self.max_units is None:
            return (f"one look at all units (a study with no sequential plan), the "
                    f"{100 * self.confidence:g}% t interval")
        if self.max_units < self.min_units:
            return (f"no look: at most {self.max_units} units, fewer than the "
                    f"{self.min_units} a decision needs")
        first, last = (self.critical_value(n) for n in (self.min_units, self.max_units))
        return (f"a look after every unit from the {ordinal(self.min_units)} to the "
                f"{ordinal(self.max_units)}, "
                f"c from {first:.2f} (at {self.min_units} units) to {last:.2f} (at "
                f"{self.max_units}): each look at the same nominal level (Pocock), calibrated "
                f"by simulation so that over all looks a true gap of 0 is called \"helps\" or "
                f"\"hurts\" at most {100 * (1 - self.confidence):g}% of the time, and a true "
                f"gap of D \"cannot help by D\" at most {50 * (1 - self.confidence):g}%")


def plan_change_note(recorded: Plan | None, max_units: int) -> str | None:
    """One line when a study that recorded a sequential plan with looks is read or continued
    under another: a plan changed after its looks were seen no longer holds its 5%."""
    if (recorded is None or recorded.max_units is None or recorded.max_units == max_units
            or recorded.max_units < recorded.min_units):
        return None
    return (f"note: this study planned its looks to {recorded.max_units} units (study.json); "
            f"deciding it with looks to {max_units} changes that plan, and if its looks were "
            f"seen its false-call rate is no longer 5% (docs/studies.md, 'Going past the "
            f"plan'; experiments/plan_extension.py {min(recorded.max_units, max_units)} "
            f"{max(recorded.max_units, max_units)})")


def running_mean_sd(gaps: np.ndarray, floor: float = 0.0) -> tuple:
    """Mean and sample sd of the first n unit gaps of each study, for every n: [studies,
    units] -> two [studies, units] (the variance held at ``floor`` or above)."""
    n = np.arange(1, gaps.shape[1] + 1)
    mean = np.cumsum(gaps, axis=1) / n
    squares = np.cumsum(gaps * gaps, axis=1)
    return mean, np.sqrt(np.maximum(squares - n * mean ** 2, floor) / np.maximum(n - 1, 1))


def abs_t_at_looks(gaps: np.ndarray, min_units: int) -> np.ndarray:
    """|t| of the one-sample t statistic (mean 0) after each unit from ``min_units`` on, for
    studies given as rows of unit gaps: [studies, units] -> [studies, looks]."""
    mean, sd = running_mean_sd(gaps, floor=1e-300)
    n = np.arange(1, gaps.shape[1] + 1)
    return (np.abs(mean) / (sd / np.sqrt(n)))[:, min_units - 1:]


@functools.lru_cache(maxsize=64)
def critical_values(min_units: int, max_units: int, confidence: float = CONFIDENCE) -> tuple:
    """``c`` at each look n = min_units..max_units (a tuple, first entry for min_units).

    Every look is held to the same nominal level (Pocock's design, on the scale of each
    look's own t distribution, whose tails are heavy at 5 units): ``c_n`` is the quantile of
    |t_n| at 1 - a, the one-sample t statistic of n independent normal gaps of mean 0, with
    ``a`` chosen so that P(|t_n| > c_n at any look) = 1 - confidence. Both are estimated from
    200,000 simulated studies with a fixed seed, so the values are the same every time
    (Monte Carlo error about 0.01). With one look (min = max = n) ``c`` is the two-sided t
    quantile with n - 1 degrees of freedom.
    """
    if min_units < 2 or max_units < min_units:
        raise ValueError(f"looks from {min_units} to {max_units} units")
    rng = np.random.default_rng(20_240_601)
    chunks = []  # |t| at the looks, [studies, looks], drawn 20,000 studies at a time
    for _ in range(_SIMULATIONS // _CHUNK):
        x = rng.standard_normal((_CHUNK, max_units), dtype=np.float32).astype(np.float64)
        chunks.append(abs_t_at_looks(x, min_units).astype(np.float32))
    t = np.concatenate(chunks)
    del chunks
    # Each look's |t| as its upper tail probability (its rank among the simulated studies);
    # a study's most extreme look has the smallest; ``a`` is that minimum's quantile.
    ordered = np.sort(t, axis=0)
    smallest = np.ones(len(t))
    for k in range(t.shape[1]):
        tail = 1.0 - np.searchsorted(ordered[:, k], t[:, k], side="right") / len(t)
        np.minimum(smallest, tail, out=smallest)
    a = float(np.quantile(smallest, 1 - confidence))
    return tuple(float(np.quantile(ordered[:, k], 1 - a)) for k in range(t.shape[1]))


def critical_value(min_units: int, max_units: int, confidence: float = CONFIDENCE,
                   n: int | None = None) -> float:
    """``c`` at the look with ``n`` units (default: the last) of :func:`critical_values`."""
    values = critical_values(min_units, max_units, confidence)
    return values[(max_units if n is None else n) - min_units]


def points(value: float) -> str:
    """A margin in words: ``1 point``, ``2 points``, ``0.5 points``."""
    return f"{value:g} point{'' if value == 1 else 's'}"


def loss_ruled_out(decision: dict, margin: float) -> bool:
    """Whether an undecided decision's interval (``as_dict``) lies above ``-margin``."""
    return bool(decision["interval_pp"]) and decision["interval_pp"][0] > -margin


def classify(lo: float, hi: float, margin: float) -> str:
    """The decision an interval [lo, hi] (points) reads as, with the margin (module doc)."""
    d = f"{margin:g}"
    if hi < 0:
        return f"hurts by {d} or more" if hi < -margin else "hurts"
    if lo > margin:
        return f"helps by {d} or more"
    if lo > 0 and hi < margin:
        return f"helps, by less than {d}"
    if lo > 0:
        return "helps"
    if hi < margin:
        return f"equivalent within ±{d}" if lo > -margin else f"cannot help by {d}"
    return "undecided"


@dataclass(frozen=True)
class Decision:
    verdict: str            # classify's words
    units: int              # units the verdict rests on (its look), or all units if undecided
    mean: float | None      # points, at that look
    lo: float | None
    hi: float | None
    c: float | None
    more_units: int | None  # undecided: about how many more units would decide it
    more_units_no_loss: int | None = None  # undecided, a loss of D not yet ruled out: about
    #                                        how many more units would rule it out

    @property
    def decided(self) -> bool:
        return self.verdict != "undecided"

    def as_dict(self) -> dict:
        interval = None if self.lo is None else [self.lo, self.hi]
        return {"verdict": self.verdict, "decided": self.decided, "units": self.units,
                "mean_pp": self.mean, "interval_pp": interval, "c": self.c,
                "more_units": self.more_units, "more_units_no_loss": self.more_units_no_loss}


def decide(gaps_pp, margin: float, plan: Plan = Plan()) -> Decision:
    """The decision on per-unit gaps (points, in unit order) with ``margin`` under ``plan``:
    the first decided look's, else undecided at the last look with a projection."""
    gaps = np.asarray(gaps_pp, dtype=float)
    for n in plan.looks(len(gaps)):
        mean, sd = float(gaps[:n].mean()), float(gaps[:n].std(ddof=1))
        c = plan.critical_value(n)
        half = c * sd / math.sqrt(n)
        verdict = classify(mean - half, mean + half, margin)
        if verdict != "undecided":
            return Decision(verdict, n, mean, mean - half, mean + half, c, None)
    n = len(gaps) if plan.max_units is None else min(len(gaps), plan.max_units)
    if n < plan.min_units:
        more = plan.min_units - n
        mean = float(gaps[:n].mean()) if n else None
        return Decision("undecided", n, mean, None, None, None, more)
    mean, sd = float(gaps[:n].mean()), float(gaps[:n].std(ddof=1))
    c = plan.critical_value(n)
    half = c * sd / math.sqrt(n)
    # Decided once the half-width falls below max(mean, margin - mean); a loss of D ruled
    # out once it falls below mean + margin.
    no_loss = units_until(sd, n, mean + margin, plan) if mean - half <= -margin else None
    return Decision("undecided", n, mean, mean - half, mean + half, c,
                    units_until(sd, n, max(mean, margin - mean), plan), no_loss)


def units_until(sd: float, n: int, room: float, plan: Plan) -> int | None:
    """Units beyond ``n`` after which the half-width c_k * sd / sqrt(k) would fall below
    ``room`` if the spread stayed as it is (None when no number does: ``room`` is 0 or less).
    A sequential plan's own c_k are used up to its last look, beyond it (and for a one-look
    study) the c of the last look, a slight overestimate."""
    if room <= 0:
        return None
    if plan.max_units is not None:
        for k in range(n + 1, plan.max_units + 1):
            if plan.critical_value(k) * sd / math.sqrt(k) < room:
                return k - n
    c = plan.critical_value(plan.max_units if plan.max_units is not None else n)
    return max(1, math.ceil((c * sd / room) ** 2) - n)


def p_outperform(gaps_pp, confidence: float = CONFIDENCE) -> dict:
    """P(A > B): the share of units where A beat B (ties half), with a Wilson score interval
    (which never claims certainty from a few units: 2 wins of 2 give 0.34-1.00)."""
    gaps = np.asarray(gaps_pp, dtype=float)
    n = len(gaps)
    if n == 0:
        return {"p": None, "ci": None, "units": 0}
    wins = float((gaps > 0).sum() + 0.5 * (gaps == 0).sum())
    p = wins / n
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"p": p, "ci": [max(0.0, centre - half), min(1.0, centre + half)], "units": n}
