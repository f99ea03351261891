"""A run folder, and :class:`RunFolder`, the one owner of its files.

    config.yaml        the run's resolved config, written once, when the run is created
    state.json         {epoch, status, best_acc, best_epoch, data_fingerprint, checkpoint, previous}
    metrics.csv        one row per finished epoch (METRIC_COLUMNS)
    last.pdparams/.pdopt, last-prev.*   resumable checkpoints (app/run/checkpoint.py)
    best.pdparams + best.json           the best eval top-1 so far, and what rebuilds its model
    predictions.csv    per eval image of the finished run: label, prediction, probabilities
    pretrained.json    what ``--pretrained`` loaded, for runs that started from weights
    vdlrecords.*.log   VisualDL records (app/run/records.py)
    .lock              held by the process that trains the run (app/run/lock.py)

Every file is written atomically (app/util/atomic.py), and one that is damaged reads as one
line naming it (exit 2), never a traceback. A new run folder is made under a hidden name and
renamed whole (:meth:`RunFolder.create`), so no process ever sees one without its state.json.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import yaml

from app.config.load import load_config, save_config
from app.config.resume import complete_run_config
from app.run.lock import RunBusy, RunLock
from app.util.atomic import atomic_write_json, atomic_write_text
from app.util.errors import UserError

METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "eval_loss", "eval_acc", "eval_top5",
                  "lr", "epoch_seconds", "train_images_per_s"]
PREDICTION_COLUMNS = ["path", "label", "pred", "prob_label", "prob_pred"]
RECORDS_PREFIX = "vdlrecords"


def read_json(path, what_to_do: str) -> dict:
    """A JSON file that must be whole; UserError naming it (and ``what_to_do``) otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        reason = "empty" if path.is_file() and path.stat().st_size == 0 else type(e).__name__
        raise UserError(f"{path} is damaged ({reason}); {what_to_do}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is damaged (not a JSON object); {what_to_do}")
    return data


class RunFolder:
    """The files of the run folder at ``path`` (which need not exist yet)."""

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    # Paths of the files. Everything outside app/run/ goes through these.
    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def best_weights(self) -> Path:
        return self.path / "best.pdparams"

    @property
    def best_file(self) -> Path:
        return self.path / "best.json"

    @property
    def last_weights(self) -> Path:
        return self.path / "last.pdparams"

    @property
    def predictions_file(self) -> Path:
        return self.path / "predictions.csv"

    @property
    def pretrained_file(self) -> Path:
        return self.path / "pretrained.json"

    def is_run(self) -> bool:
        """Whether the folder holds a run (config.yaml and state.json)."""
        return self.config_file.is_file() and self.state_file.is_file()

    # state.json
    def read_state(self) -> dict:
        """state.json ({} if none); a damaged one is a one-line UserError."""
        if not self.state_file.is_file():
            return {}
        return read_json(self.state_file, "it is written atomically, so it was changed by hand: "
                                          "restore it, or move the run folder away and start again")

    def write_state(self, state: dict) -> None:
        atomic_write_json(self.state_file, state)

    def mark(self, status: str) -> None:
        """Record ``status`` (finished, interrupted, diverged) in state.json."""
        state = self.read_state()
        state["status"] = status
        self.write_state(state)

    # config.yaml
    def read_config(self) -> dict:
        """The run's resolved config, checked whole (what ``--resume`` continues on)."""
        if not self.is_run():
            raise UserError(f"--resume {self.path}: not a run folder (no config.yaml/state.json)")
        hint = "restore it (it is the run's resolved config) or start the run again"
        try:
            written = yaml.safe_load(self.config_file.read_text(encoding="utf-8", errors="replace"))
        except yaml.YAMLError:
            raise UserError(f"{self.config_file} is damaged (not valid YAML); {hint}") from None
        # A run's config.yaml is complete; a cut one would silently resume on default values.
        if not complete_run_config(written):
            raise UserError(f"{self.config_file} is damaged (empty or cut short); {hint}")
        return load_config(self.config_file)

    def read_config_raw(self):
        """config.yaml as YAML gives it (None when unreadable): for readers that check it."""
        try:
            return yaml.safe_load(self.config_file.read_text())
        except (OSError, yaml.YAMLError):
            return None

    def write_config(self, cfg: dict) -> None:
        save_config(cfg, self.config_file)

    # metrics.csv
    def read_metrics(self) -> list:
        """Rows of metrics.csv as dicts of floats (epoch as int); [] if there is none."""
        path = self.metrics_file
        if not path.is_file():
            return []
        try:
            with open(path, newline="") as f:
                return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
                        for row in csv.DictReader(f)]
        except (ValueError, TypeError, KeyError, csv.Error) as e:
            raise UserError(f"{path} is damaged ({type(e).__name__}); restore it or move the run "
                            f"folder away") from None

    def write_metrics(self, rows: list) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (row[k] if k == "epoch" else f"{row[k]:.6g}")
                             for k in METRIC_COLUMNS})
        atomic_write_text(self.metrics_file, buf.getvalue())

    # best.json
    def read_best(self, what_to_do: str) -> dict:
        return read_json(self.best_file, what_to_do)

    # predictions.csv
    def read_predictions(self) -> dict | None:
        """{path relative to the split: correct (bool)}, or None when the run has none."""
        if not self.predictions_file.is_file():
            return None
        with open(self.predictions_file, newline="") as f:
            return {row["path"]: row["label"] == row["pred"] for row in csv.DictReader(f)}

    def write_predictions(self, rows) -> None:
        """``rows``: (path, label, pred, prob_label, prob_pred) per eval image."""
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\n")
        out.writerow(PREDICTION_COLUMNS)
        for path, label, pred, prob_label, prob_pred in rows:
            out.writerow([path, int(label), int(pred), f"{prob_label:.6f}", f"{prob_pred:.6f}"])
        atomic_write_text(self.predictions_file, buf.getvalue())

    # pretrained.json
    def read_pretrained(self) -> dict:
        if not self.pretrained_file.is_file():
            raise UserError(f"--resume {self.path}: config.yaml names model.pretrained but "
                            f"pretrained.json is missing")
        return json.loads(self.pretrained_file.read_text())

    def write_pretrained(self, report: dict) -> None:
        atomic_write_json(self.pretrained_file, report)

    # the process that trains it
    def lock(self) -> RunLock:
        """Hold the run's lock (RunBusy when another process trains it)."""
        return RunLock(self.path)

    def remove_stale_temporaries(self) -> list:
        """Delete the half-written temporaries a killed run left (app.util.atomic's
        ``.<name>.<random>.tmp``); returns their names. Only for the run being resumed."""
        removed = []
        for path in self.path.iterdir():
            if path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file():
                path.unlink()
                removed.append(path.name)
        return removed

    def record_files(self) -> list:
        """The VisualDL record files, oldest first."""
        return sorted(p for p in self.path.iterdir() if p.name.startswith(RECORDS_PREFIX))

    @staticmethod
    def find_below(root) -> list:
        """Every folder below ``root`` (itself included) with a config.yaml, in path order:
        the runs of a study, finished or not."""
        return [RunFolder(p.parent) for p in sorted(Path(root).rglob("config.yaml"))]

    # making one
    @staticmethod
    def free_name(output, name: str) -> RunFolder:
        """OUTPUT/name, or OUTPUT/name-2, -3, ... when that folder already exists."""
        output = Path(output)
        candidate, i = output / name, 1
        while candidate.exists():
            i += 1
            candidate = output / f"{name}-{i}"
        return RunFolder(candidate)

    def create(self, fill: Callable[[RunFolder], None]) -> None:
        """Make the folder whole or not at all: ``fill`` writes its first files into a hidden
        folder beside it, which is then renamed into place. A kill meanwhile never leaves a
        run folder without its state.json (which ``--resume`` and studies would refuse).
        Raises :class:`RunBusy` when another process made the folder first."""
        if self.path.exists():
            raise self.taken()
        tmp = RunFolder(self.path.with_name(f".{self.name}.creating-{os.getpid()}"))
        tmp.path.mkdir(parents=True)
        fill(tmp)
        try:
            os.rename(tmp.path, self.path)
        except OSError:  # another process renamed its (never empty) folder there meanwhile
            if not self.path.exists():
                raise
            shutil.rmtree(tmp.path)
            raise self.taken() from None

    def taken(self) -> RunBusy:
        return RunBusy(f"{self.path} was started by another process meanwhile (another study on "
                       f"the same output?); it trains there, this process leaves it alone")
