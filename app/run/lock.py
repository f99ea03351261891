"""One training process at a time per run folder.

Two processes resuming the same run (``--resume`` typed twice, or one study command started
in two terminals) would write one folder's checkpoints, metrics.csv and state.json over each
other, and the second would delete the first's half-written temporaries on its way in. So
the process that trains a run holds an exclusive advisory lock on ``RUN/.lock`` (POSIX
``flock``; ``msvcrt.locking`` on Windows) for as long as it trains. The operating system
drops the lock when the process ends, however it ends (kill -9 included), so a lock is
never left stale; the file itself stays (removing it would race with a process about to
lock it) and holds the owner's host and PID for the message. A run whose lock is held
raises :class:`RunBusy`, a :class:`UserError`; a study skips that run with a line. A run
that does not exist yet has no lock to take: a study creates its runs under their exact
names (``trainer.train(..., exact_name=True)``) and leaves a name another process took
first to that process, also with :class:`RunBusy`.

On a network file system the lock is as good as the file system's locking.
"""
import os
import socket
from contextlib import contextmanager

from app.util.errors import UserError

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt


class RunBusy(UserError):
    """The run folder is being trained by another process."""


class RunLock:
    """The lock on one run folder, held from construction to :meth:`release`."""

    def __init__(self, run_dir):
        fd = os.open(os.path.join(os.fspath(run_dir), LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
        except OSError:
            try:
                owner = os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown"
            except OSError:  # Windows: the locked byte cannot be read either
                owner = "unknown"
            os.close(fd)
            raise RunBusy(f"{os.fspath(run_dir)} is being trained by another process "
                          f"({owner}); wait for it to finish or stop it, then try again") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock(fd: int) -> None:
    """Lock ``fd`` exclusively without waiting; OSError if another process holds it."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)


@contextmanager
def held(path):
    """Hold an exclusive lock on the file ``path`` (created if needed) for the block, waiting
    for another process that holds it: for short read-modify-write updates of a shared file
    (a study's ledger), which several processes of one study make."""
    fd = os.open(os.fspath(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
        yield
    finally:
        os.close(fd)  # closing the descriptor drops the lock
