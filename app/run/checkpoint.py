"""A run's files on disk: written so that a kill at any moment loses at most one epoch, and
read so that a damaged file is one clear line (exit 2) that names it, never a traceback.

Checkpoints. ``save_last`` keeps two resumable checkpoints: ``last.*`` (the newest finished
epoch) and ``last-prev.*`` (the one before). For epoch N it moves last.* to last-prev.*,
writes the new last.pdparams and last.pdopt atomically, and only then state.json, which
records the epoch, size and CRC-32 of both checkpoints. ``resume_checkpoint`` trusts a file
pair only when it matches what state.json recorded, so a kill between any two of these steps
(or a file damaged by hand) resumes from the newest pair that is whole -- the previous epoch
if need be, saying so.

Optimizer state. Paddle keys an optimizer's state by generated parameter names
(``conv2d_57.w_0_velocity_0``), which depend on what the process built before. last.pdopt
is written keyed by the model's structured names instead (``b1.0.0.weight@velocity``), so
a run resumes in any process; files written the old way still load (by generated names).

Best model. best.json records the CRC-32 of best.pdparams: a kill between the two renames,
or a damaged best.pdparams, is detected (``check_best``) instead of evaluating a model that
best.json does not describe.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

from app.build.weights import RefusedGlobal, load_state_dict, split_checkpoint, unpickle
from app.run.folder import RunFolder
from app.util.atomic import atomic_save, atomic_write_json
from app.util.errors import UserError
from models import upgrade_state_dict

LAST, PREV = "last", "last-prev"


_CRC_SEEN: dict = {}  # (path, size, mtime_ns) -> crc: this process's own writes, not re-read


def crc32(path) -> str:
    """CRC-32 of a file's bytes as 8 hex digits (fast: ~1 GB/s).

    Remembered per (path, size, mtime) within the process, so that ``save_last`` does not
    read the checkpoint it fingerprinted an epoch earlier again; a fresh process (a resume)
    always reads the files."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _CRC_SEEN:
        value = 0
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                value = zlib.crc32(chunk, value)
        _CRC_SEEN[key] = f"{value:08x}"
    return _CRC_SEEN[key]


def _fingerprint(run_dir: Path, prefix: str) -> dict:
    return {ext: {"size": (run_dir / f"{prefix}.{ext}").stat().st_size,
                  "crc32": crc32(run_dir / f"{prefix}.{ext}")} for ext in ("pdparams", "pdopt")}


def save_last(run_dir, network, optimizer, state: dict, epoch: int, status: str = "running",
              params: dict | None = None) -> None:
    """The resumable checkpoint for the end of ``epoch`` (0: before training); see module doc.

    ``params`` replaces ``network.state_dict()`` as last.pdparams' content (the EMA adds its
    average to the trained weights, app/train/ema.py)."""
    run_dir = Path(run_dir)
    previous = state.get("checkpoint")
    # last.* becomes last-prev.* only if it is the pair state.json vouches for; a pair written
    # by a run killed before its state.json is dropped (overwritten below).
    if previous is None or _matches(run_dir, LAST, previous):
        for ext in ("pdparams", "pdopt"):
            if (run_dir / f"{LAST}.{ext}").is_file():
                os.replace(run_dir / f"{LAST}.{ext}", run_dir / f"{PREV}.{ext}")
    atomic_save(params if params is not None else network.state_dict(), run_dir / f"{LAST}.pdparams")
    atomic_save(structured_optimizer_state(network, optimizer), run_dir / f"{LAST}.pdopt")
    state.update(epoch=epoch, status=status,
                 checkpoint={"epoch": epoch, **_fingerprint(run_dir, LAST)},
                 previous=previous)
    RunFolder(run_dir).write_state(state)


def _file_matches(path: Path, record: dict) -> bool:
    return path.is_file() and path.stat().st_size == record["size"] and crc32(path) == record["crc32"]


def _matches(run_dir: Path, prefix: str, record: dict) -> bool:
    return all(_file_matches(run_dir / f"{prefix}.{ext}", record[ext]) for ext in ("pdparams", "pdopt"))


def _find(run_dir: Path, record: dict) -> dict | None:
    """{ext: path} of the files that match ``record``, wherever the rotation left them."""
    found = {}
    for ext in ("pdparams", "pdopt"):
        found[ext] = next((run_dir / f"{prefix}.{ext}" for prefix in (LAST, PREV)
                           if _file_matches(run_dir / f"{prefix}.{ext}", record[ext])), None)
    return found if all(found.values()) else None


def resume_checkpoint(run_dir, state: dict) -> tuple[str, int]:
    """(file prefix, epoch) to resume ``run_dir`` from: the newest whole checkpoint pair.

    A kill inside ``save_last``'s rotation can leave a pair split between last.* and
    last-prev.*; it is moved back together as last.*. Runs written before checkpoints were
    fingerprinted resume from last.* as before.
    """
    run_dir = Path(run_dir)
    if "checkpoint" not in state:
        return LAST, int(state.get("epoch", 0))
    for record in (state["checkpoint"], state.get("previous")):
        found = _find(run_dir, record) if record else None
        if found is None:
            continue
        prefixes = {path.name.rsplit(".", 1)[0] for path in found.values()}
        prefix = prefixes.pop() if len(prefixes) == 1 else LAST
        if prefix == LAST:
            for ext, path in found.items():
                if path != run_dir / f"{LAST}.{ext}":
                    os.replace(path, run_dir / f"{LAST}.{ext}")
        if record is not state["checkpoint"]:
            print(f"{run_dir}: the epoch-{state['checkpoint']['epoch']} checkpoint is damaged "
                  f"or incomplete; resuming from epoch {record['epoch']} ({prefix}.pdparams)",
                  flush=True)
        return prefix, int(record["epoch"])
    raise UserError(f"{run_dir}: last.pdparams/last.pdopt (and last-prev.*) are damaged or do "
                    f"not match state.json; the run cannot be resumed: start it again or "
                    f"evaluate best.pdparams with eval.py")


STRUCTURED = "__keys__"  # marks an optimizer state keyed by structured names


def _accumulator_names(network, optimizer) -> dict:
    """{generated accumulator name: "<structured param name>@<accumulator>"}."""
    structured = {p.name: name for name, p in network.named_parameters()}
    return {var.name: f"{structured[pname]}@{acc}"
            for acc, by_param in optimizer._accumulators.items()
            for pname, var in by_param.items() if pname in structured}


def structured_optimizer_state(network, optimizer) -> dict:
    """``optimizer.state_dict()`` with accumulators keyed by structured parameter names."""
    names = _accumulator_names(network, optimizer)
    state = {names.get(k, k): v for k, v in optimizer.state_dict().items()}
    state[STRUCTURED] = "structured"
    return state


def load_resume_checkpoint(model, run_dir, prefix: str) -> tuple:
    """Load ``prefix``.pdparams/.pdopt into hapi ``model`` (damaged: one line).

    Returns (EMA weights or None, EMA update count) from last.pdparams (app/train/ema.py).
    """
    run_dir = Path(run_dir)
    hint = "start the run again (or evaluate best.pdparams with eval.py)"
    path = run_dir / f"{prefix}.pdparams"
    params, ema, updates = split_checkpoint(load_state_dict(path, hint))
    if upgrade_state_dict(params)[1]:  # one line instead of hapi's key error
        raise UserError(f"{path} uses the earlier resnet50_<attention> layout (conv2.0 / bn3.0 "
                        f"keys): eval.py and --pretrained read it, resuming it is not supported; "
                        f"start a new run")
    opt = load_state_dict(run_dir / f"{prefix}.pdopt", hint)
    if opt.pop(STRUCTURED, None) is None:  # written before structured keys: hapi's loader
        _hapi_load(model, path, run_dir / f"{prefix}.pdopt", hint)
        return None, 0
    network, optimizer = model.network, model._optimizer
    to_generated = {v: k for k, v in _accumulator_names(network, optimizer).items()}
    missing = [k for k in opt if "@" in k and k not in to_generated]
    if missing:
        raise UserError(f"{run_dir / (prefix + '.pdopt')} does not fit this model "
                        f"({missing[0]} has no parameter); start the run again")
    network.set_state_dict(params)
    optimizer.set_state_dict({to_generated.get(k, k): v for k, v in opt.items()})
    return ema, updates


def _hapi_load(model, params_path: Path, opt_path: Path, hint: str) -> None:
    """What hapi's ``Model.load`` does with a checkpoint pair (Paddle 3.3.1: the raw
    pickles, matched to the network by name and shape, handed to its adapter), with both
    files read by :func:`app.build.weights.unpickle`, never by plain pickle."""
    try:
        params, opt = unpickle(params_path), unpickle(opt_path)
    except RefusedGlobal:
        raise
    except Exception as e:
        raise UserError(f"{params_path.parent}: {params_path.name}/{opt_path.name} are damaged "
                        f"({type(e).__name__}); {hint}") from None
    matched = []
    for key, param in model.network.state_dict().items():
        state = params.get(key)
        if state is None or list(state.shape) != list(param.shape):
            raise UserError(f"{params_path} does not fit this model ({key}); {hint}")
        matched.append((param, state))
    model._adapter.load(matched, opt, None)


def save_best(run_dir, network, meta: dict) -> None:
    """best.pdparams, then best.json with its CRC-32 (see module doc)."""
    run = RunFolder(run_dir)
    atomic_save(network.state_dict(), run.best_weights)
    atomic_write_json(run.best_file, {**meta, "weights_crc32": crc32(run.best_weights)})


def check_best(weights, meta: dict) -> None:
    """UserError when ``weights`` is not the file ``meta`` (best.json) was written with."""
    expected = meta.get("weights_crc32")
    if expected and Path(weights).name == "best.pdparams" and crc32(weights) != expected:
        raise UserError(f"{weights} does not match {Path(weights).with_suffix('.json').name} "
                        f"(damaged, or the run was stopped between writing the two); evaluate "
                        f"--checkpoint {Path(weights).parent / 'last.pdparams'} instead, or resume "
                        f"the run to write a new best")
