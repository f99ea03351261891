"""A sequential study's ledger in its output folder (study.json): its plan and its cost so far.

``train.py --until-decided`` writes the plan it runs under (margin, looks, budget) and, after
every unit, the machine time it took, so that a study interrupted and resumed, or run by
several processes on one output folder, adds up its cost across all of them. Updates are
read-modify-write under a lock file beside it; the file itself is written atomically.

    {"plan": {"margin_pp": 2.0, "min_units": 5, "max_units": 20, "confidence": 0.95,
              "folds": 5, "models": [...], "budget_seconds": 7200.0},
     "spent_seconds": 3011.4,
     "units": {"0": {"seconds": 1503.2, "runs_trained": 3, "runs": 3}, ...}}

The budget counts machine time: two machines working for an hour spend two hours of it.
"""
from __future__ import annotations

import json
from pathlib import Path

from app.run.lock import held
from app.study.decide import Plan
from app.util.atomic import atomic_write_json
from app.util.errors import UserError

LEDGER = "study.json"


class Ledger:
    def __init__(self, output):
        self.path = Path(output) / LEDGER
        self.lock_path = Path(output) / f".{LEDGER}.lock"

    def read(self) -> dict:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"{self.path} is damaged ({type(e).__name__}); it is written "
                            f"atomically, so it was changed by hand: restore it") from None
        if not isinstance(data, dict):
            raise UserError(f"{self.path} is damaged (not a JSON object); restore it")
        return data

    def update(self, change) -> dict:
        """Apply ``change(data)`` to the ledger under its lock; returns the new content."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with held(self.lock_path):
            data = self.read()
            change(data)
            atomic_write_json(self.path, data)
        return data

    def plan(self) -> tuple[Plan | None, float | None]:
        """(the sequential plan, its margin), or (None, None) for a study without one."""
        plan = self.read().get("plan")
        if not plan:
            return None, None
        return (Plan(plan["max_units"], plan["min_units"], plan["confidence"]),
                plan.get("margin_pp"))

    def start(self, plan: dict) -> dict:
        """Record ``plan`` (this invocation's) and return the ledger."""
        def change(data):
            data["plan"] = plan
            data.setdefault("spent_seconds", 0.0)
            data.setdefault("units", {})
        return self.update(change)

    def add_unit(self, unit: int, seconds: float, runs_trained: int, runs: int) -> dict:
        """Add what training (part of) ``unit`` took this process."""
        def change(data):
            data["spent_seconds"] = data.get("spent_seconds", 0.0) + seconds
            entry = data.setdefault("units", {}).setdefault(str(unit), {
                "seconds": 0.0, "runs_trained": 0, "runs": runs})
            entry["seconds"] += seconds
            entry["runs_trained"] += runs_trained
        return self.update(change)


def unit_estimate(ledger: dict, fallback: float | None = None) -> float | None:
    """Machine seconds the next unit should take: the median of the units whose every run
    was trained by the processes that recorded them, else ``fallback`` (from epoch times)."""
    whole = sorted(u["seconds"] for u in ledger.get("units", {}).values()
                   if u["runs_trained"] >= u["runs"] > 0)
    if whole:
        return whole[len(whole) // 2]
    return fallback


def parse_budget(text: str) -> float:
    """``2h``, ``90m``, ``45s``, ``1.5h`` or plain seconds -> seconds; one line otherwise."""
    units = {"s": 1, "m": 60, "h": 3600}
    value, unit = (text[:-1], text[-1]) if text and text[-1].lower() in units else (text, "s")
    try:
        seconds = float(value) * units[unit.lower()]
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise UserError(f"--budget takes a positive duration such as 2h, 90m or 3600s; "
                        f"got {text!r}")
    return seconds
