"""Atomic file writes: a temporary file in the same folder, flushed, then renamed.

A crash (or Ctrl-C) part-way through leaves the previous file untouched, never half a file.
The file gets the permissions ``open()`` would give it (0666 less the umask), not mkstemp's
private 0600. This module does not import paddle; :func:`atomic_save` imports it lazily.
"""
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it over ``path`` if the block succeeds."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_save(obj, path) -> None:
    """``paddle.save`` made atomic."""
    import paddle

    with atomic_path(path) as tmp:
        paddle.save(obj, tmp)
