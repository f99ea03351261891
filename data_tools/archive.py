"""Safe extraction of ``.tar`` / ``.tar.gz`` / ``.tgz`` / ``.zip`` sources, nested ones included.

Every member is checked before anything is written: an absolute path, a ``..`` component, a
link whose target is absolute or contains ``..``, or a device/fifo member makes the whole
archive refused with a :class:`UserError`. Link targets with ``..`` are refused even when
they would stay inside, because a chain of in-archive links can otherwise walk out.
Tar extraction also runs under Python's ``filter="data"`` as a second line of defence.
Sizes: an archive whose members add up to more than the free space at the destination
(minus a 1 GiB margin) is refused before anything is written, so a zip bomb cannot fill the
disk. The sizes are the archive's own (a tar member's size is what gets written; zipfile
stops each member at its declared size).
"""
from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from app.util.errors import UserError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
# Nested archives are opened at most this deep (caltech-101.zip -> 101_ObjectCategories.tar.gz).
MAX_NESTING = 3
# Free space left untouched at the destination after extraction.
DISK_MARGIN = 1 << 30


def is_archive(path: str | Path) -> bool:
    """True when ``path`` has one of the supported archive suffixes (case-insensitive)."""
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def unsafe_reason(name: str) -> str | None:
    """Why an archive path would land outside the extraction folder, or None if it cannot."""
    p = name.replace("\\", "/")
    if p.startswith("/") or (len(p) > 1 and p[1] == ":"):
        return "has an absolute path"
    if ".." in p.split("/"):
        return "has a '..' component"
    return None


def _refuse(archive: Path, member: str, reason: str) -> UserError:
    return UserError(f"unsafe archive {archive}: member {member!r} {reason}; nothing was extracted")


def _safe_tar_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        reason = unsafe_reason(m.name)
        if reason is None and (m.issym() or m.islnk()):
            if unsafe_reason(m.linkname):
                reason = f"is a link pointing outside ({m.linkname!r})"
        if reason is None and (m.ischr() or m.isblk() or m.isfifo()):
            reason = "is a device or fifo"
        if reason:
            raise _refuse(archive, m.name, reason)
    return members


def _safe_zip_members(zf: zipfile.ZipFile, archive: Path) -> list[zipfile.ZipInfo]:
    keep = []
    for info in zf.infolist():
        reason = unsafe_reason(info.filename)
        if reason:
            raise _refuse(archive, info.filename, reason)
        if stat.S_ISLNK(info.external_attr >> 16):
            target = zf.read(info).decode("utf-8", "replace")
            if unsafe_reason(target):
                raise _refuse(archive, info.filename, f"is a link pointing outside ({target!r})")
            continue  # zipfile would write the link as a text file; an image set needs neither
        keep.append(info)
    return keep


def _check_space(archive: Path, dest: Path, size: int) -> None:
    free = shutil.disk_usage(dest).free
    if size > free - DISK_MARGIN:
        raise UserError(f"archive {archive} expands to {size / 2**30:.1f} GiB but {dest} has "
                        f"{free / 2**30:.1f} GiB free (keeping {DISK_MARGIN >> 30} GiB spare); "
                        f"nothing was extracted")


def safe_extract(archive: str | Path, dest: str | Path) -> None:
    """Extract ``archive`` into ``dest`` after checking every member (see module docstring).

    Raises UserError for an unsafe or unreadable archive; nothing is written in that case.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                members = _safe_zip_members(zf, archive)
                _check_space(archive, dest, sum(m.file_size for m in members))
                zf.extractall(dest, members=members)
        else:
            with tarfile.open(archive) as tar:
                members = _safe_tar_members(tar, archive)
                _check_space(archive, dest, sum(m.size for m in members if m.isfile()))
                tar.extractall(dest, members=members, filter="data")
    except UserError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise UserError(f"cannot extract {archive}: {type(e).__name__}: {e}") from None


def _nested_archives(folder: Path) -> list[Path]:
    """Archives below ``folder``; names mentioning 'ObjectCategories' first (Caltech's layout)."""
    found = [p for p in sorted(folder.rglob("*"))
             if p.is_file() and is_archive(p) and "__MACOSX" not in p.parts
             and not p.name.startswith(".")]
    return sorted(found, key=lambda p: "objectcategories" not in p.name.lower())


def extract_image_tree(archive: str | Path, workdir: str | Path,
                       find_root: Callable[[Path], Path | None]) -> Path:
    """Extract ``archive`` under ``workdir`` and return its folder of class folders.

    ``find_root(folder)`` returns that folder below ``folder`` or None. When the archive
    holds no such folder, archives inside it are opened in turn (Caltech's
    ``caltech-101.zip`` holds ``101_ObjectCategories.tar.gz``), up to MAX_NESTING deep.
    ``workdir`` should be a fresh temporary folder that the caller deletes.
    """
    archive, workdir = Path(archive), Path(workdir)
    pending = [(archive, 0)]
    count = 0
    while pending:
        current, depth = pending.pop(0)
        out = workdir / f"x{count}"
        count += 1
        safe_extract(current, out)
        root = find_root(out)
        if root is not None:
            return root
        if depth + 1 < MAX_NESTING:
            pending.extend((p, depth + 1) for p in _nested_archives(out))
    raise UserError(f"{archive} holds no folder of class folders with images "
                    f"(expected e.g. 101_ObjectCategories/<class>/*.jpg)")
