"""Study runs side by side: ``--jobs N`` trains N runs at once, each in a process of its own."""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

from app.build.device import available_cores
from app.run.folder import RunFolder
from app.run.lock import RunBusy
from app.study.runs import resumed_config
from app.train import trainer
from app.util.errors import UserError


def run_side_by_side(pending: list, output: Path, jobs: int) -> int:
    """Train ``pending`` runs ``jobs`` at a time, each in a spawned process with ``cores //
    jobs`` threads (unless ``train.threads`` is set), its output in OUTPUT/logs/<run>.log.

    Returns how many runs trained to the end.

    Small networks use two cores poorly from one process: the loader, the augmentation and
    Python's op dispatch run on one core while the other waits. Two single-thread runs side
    by side trained 1.25x (reference recipe) to 1.39x (small_data) faster per epoch than one
    after the other on two cores (docs/speed.md). A run's thread count is recorded in its
    config.yaml. Ctrl-C stops every running run at its last finished epoch (re-running the
    command resumes them); so does SIGINT or SIGTERM sent to this process alone, or its death:
    a worker whose study stops or whose parent is gone interrupts its own run.
    """
    logs = output / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    threads = max(1, available_cores() // jobs)
    started, finished, trained, errors = time.perf_counter(), 0, 0, []
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: Paddle is not fork-safe
    stop = context.Event()  # set on Ctrl-C: running runs stop, those handed to a worker do not start
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_worker_init,
                                initargs=(stop, os.getpid())) as pool:
        futures = {}
        try:
            for name, cfg, run_dir in pending:
                log = logs / f"{name}.log"
                future = pool.submit(_run_one, cfg, run_dir and str(run_dir), str(log), threads)
                futures[future] = name
                print(f"== {name} ({'resumed, ' if run_dir else ''}log: {log})", flush=True)
            for future in cf.as_completed(futures):
                name = futures[future]
                code, message = future.result()
                finished += 1
                if code == -1:
                    continue
                if code == 0:
                    trained += 1
                    print(f"{name}: {message}", flush=True)
                    if finished == 1 and len(futures) > 1:
                        left, took = len(futures) - 1, time.perf_counter() - started
                        print(f"study ETA: {left} more runs, {jobs} at a time, "
                              f"~{left * took / jobs / 60:.0f} min", flush=True)
                elif code == 130:
                    raise KeyboardInterrupt
                elif code == BUSY:
                    print(f"{name}: {message}", flush=True)
                elif code == 2:  # a UserError: as one after the other, the study stops with it
                    errors.append(f"{name}: {message}")
                    stop.set()
                else:
                    print(f"{name}: {message}; the study goes on without it", flush=True)
        except KeyboardInterrupt:
            stop.set()
            for future in futures:
                future.cancel()
            raise trainer.RunStopped("study interrupted: every running run stopped at its last "
                                     "finished epoch; re-run the same command to resume", 130) from None
    if errors:
        raise UserError(errors[0])
    return trained


_STOP = None  # the study's stop event, in a worker process
_TRAINING = threading.Event()  # set while the worker trains a run
_INTERRUPTED = False
BUSY = 75  # _run_one's code for a run that another process is training (EX_TEMPFAIL)


def _worker_init(stop, parent: int) -> None:
    """In a worker: SIGTERM, and SIGINT unless the shell started the study with it ignored,
    stop the run at its last finished epoch, once (a second signal does not cut that short);
    a watchdog sends SIGTERM when the study stops or its process is gone. Ctrl-C reaches every
    process of the terminal's group, but ``kill -INT`` or ``kill`` reaches the parent only."""
    global _STOP
    _STOP = stop
    signal.signal(signal.SIGTERM, _interrupt_once)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _interrupt_once)
    threading.Thread(target=_watch, args=(stop, parent), daemon=True).start()


def _interrupt_once(signum, frame) -> None:
    global _INTERRUPTED
    if _INTERRUPTED or not _TRAINING.is_set():
        return
    _INTERRUPTED = True
    raise KeyboardInterrupt


def _watch(stop, parent: int) -> None:
    """Interrupts the run (once) when the study stops or its process is gone; in that case
    also ends the worker once the run has stopped: nobody would hand it another run, and its
    queue would keep it waiting for ever."""
    while True:
        orphan = os.getppid() != parent
        if (orphan or stop.is_set()) and _TRAINING.is_set() and not _INTERRUPTED:
            os.kill(os.getpid(), signal.SIGTERM)  # _interrupt_once: the run stops, once
        if orphan and not _TRAINING.is_set():
            os._exit(1)
        time.sleep(1.0)


def _run_one(cfg: dict, run_dir: str | None, log: str, threads: int) -> tuple[int, str]:
    """One study run in a worker process: (exit code, one line), never an exception."""
    if _INTERRUPTED or (_STOP is not None and _STOP.is_set()):
        return -1, "not started: the study is stopping"
    _TRAINING.set()
    try:
        return _train_logged(cfg, run_dir, log, threads)
    finally:
        _TRAINING.clear()


def _train_logged(cfg: dict, run_dir: str | None, log: str, threads: int) -> tuple[int, str]:
    with open(log, "a", buffering=1) as f:
        os.dup2(f.fileno(), 1)  # Paddle's C++ logs too
        os.dup2(f.fileno(), 2)
        try:
            if run_dir is not None:
                cfg = resumed_config(run_dir, cfg)
            if not cfg["train"]["threads"]:
                cfg["train"]["threads"] = threads
            path = trainer.train(cfg, run_dir, exact_name=True)
            rows = RunFolder(path).read_metrics()
            n = cfg["train"]["threads"]
            return 0, (f"finished, final eval top-1 {float(rows[-1]['eval_acc']):.4f} "
                       f"({len(rows)} epochs, {n} thread{'s' if n > 1 else ''})")
        except trainer.RunStopped as e:
            return e.exit_code, str(e)
        except KeyboardInterrupt:
            return 130, "interrupted"
        except RunBusy as e:  # another process trains it: skipped, the study goes on
            return BUSY, f"skipped: {e}"
        except UserError as e:
            return 2, str(e)
