"""Archive sources: tar/zip/nested layouts work, path traversal is refused before writing."""
import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from app.util.errors import UserError
from data_tools.archive import safe_extract
from data_tools.split import split_dataset
from tests.helpers_images import make_tree, tree_bytes
from tests.test_split import assert_user_error, run_cli


def make_src(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "raw" / "101_ObjectCategories", {"a": 5, "b": 5})


def tar_tree(folder: Path, out: Path, arcname: str) -> Path:
    with tarfile.open(out, "w:gz" if out.name.endswith("gz") else "w") as tar:
        tar.add(folder, arcname=arcname)
    return out


def split_lists(dst: Path) -> dict:
    return {k: v for k, v in tree_bytes(dst).items() if k != "manifest.json"}


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".tar", ".zip"])
def test_archive_source_matches_folder_source(tmp_path, suffix):
    src = make_src(tmp_path)
    split_dataset(src, tmp_path / "from_dir", progress=False)
    arc = tmp_path / f"data{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(arc, "w") as zf:
            for p in sorted(src.rglob("*")):
                zf.write(p, "101_ObjectCategories/" + p.relative_to(src).as_posix())
    else:
        tar_tree(src, arc, "101_ObjectCategories")
    m = split_dataset(arc, tmp_path / "out" / "from_arc", progress=False)
    assert split_lists(tmp_path / "from_dir") == split_lists(tmp_path / "out" / "from_arc")
    assert m["source"] == str(arc.resolve())
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["from_arc"]  # temp folder removed


def test_nested_zip_holding_tar_gz(tmp_path):
    """The official caltech-101.zip layout: caltech-101/101_ObjectCategories.tar.gz inside."""
    src = make_src(tmp_path)
    inner = tar_tree(src, tmp_path / "101_ObjectCategories.tar.gz", "101_ObjectCategories")
    notes = tmp_path / "Annotations.tar"
    with tarfile.open(notes, "w") as tar:
        info = tarfile.TarInfo("Annotations/a/annotation_0001.mat")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"mat"))
    arc = tmp_path / "caltech-101.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.write(notes, "caltech-101/Annotations.tar")
        zf.write(inner, "caltech-101/101_ObjectCategories.tar.gz")
        zf.writestr("__MACOSX/caltech-101/._101_ObjectCategories.tar.gz", b"junk")
    m = split_dataset(arc, tmp_path / "dst", progress=False)
    assert m["classes"] == ["a", "b"] and m["train"] + m["eval"] == 10


def evil_tar(path: Path, kind: str, outside: Path) -> None:
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("data/a/fine.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        if kind == "symlink":
            info = tarfile.TarInfo("data/a/link")
            info.type, info.linkname = tarfile.SYMTYPE, str(outside)
            tar.addfile(info)
            info = tarfile.TarInfo("data/a/rel_link")
            info.type, info.linkname = tarfile.SYMTYPE, "../../../outside"
            tar.addfile(info)
            return
        name = str(outside / "evil.txt") if kind == "absolute" else "data/../../outside/evil.txt"
        info = tarfile.TarInfo(name)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))


def evil_zip(path: Path, kind: str, outside: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data/a/fine.txt", b"ok")
        if kind == "symlink":
            info = zipfile.ZipInfo("data/a/link")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, str(outside))
        else:
            name = (str(outside / "evil.txt") if kind == "absolute"
                    else "data/../../outside/evil.txt")
            zf.writestr(zipfile.ZipInfo(name), b"evil")


@pytest.mark.parametrize("fmt", ["tar", "zip"])
@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink"])
def test_traversal_refused_and_nothing_written(tmp_path, fmt, kind):
    work = tmp_path / "work" / "x"
    outside = tmp_path / "outside"
    arc = tmp_path / f"evil.{fmt}"
    (evil_tar if fmt == "tar" else evil_zip)(arc, kind, outside)
    with pytest.raises(UserError, match="unsafe archive"):
        safe_extract(arc, work)
    assert not outside.exists()
    assert not any(p.is_file() for p in (tmp_path / "work").rglob("*"))


def test_cli_refuses_unsafe_archive(tmp_path):
    outside = tmp_path / "outside"
    evil_tar(tmp_path / "evil.tar", "dotdot", outside)
    r = run_cli("--src", tmp_path / "evil.tar", "--dst", tmp_path / "out" / "dst")
    assert_user_error(r, "unsafe archive", "..")
    assert not outside.exists()
    assert not any((tmp_path / "out").rglob("*.txt"))


def test_archive_without_images_is_a_user_error(tmp_path):
    arc = tmp_path / "empty.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("readme.txt", b"nothing here")
    with pytest.raises(UserError, match="no folder of class folders"):
        split_dataset(arc, tmp_path / "dst", progress=False)


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_archive_larger_than_free_space_refused(tmp_path, monkeypatch, fmt):
    import shutil

    from data_tools import archive

    arc = tmp_path / f"big.{fmt}"
    payload = b"\0" * 4096  # compresses to almost nothing, like a zip bomb's members
    if fmt == "zip":
        with zipfile.ZipFile(arc, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("cls/a.jpg", payload)
    else:
        with tarfile.open(arc, "w:gz") as tar:
            info = tarfile.TarInfo("cls/a.jpg")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    real = shutil.disk_usage(tmp_path)
    # 1 KiB free beyond the margin: the 4 KiB member does not fit.
    fake = real._replace(free=archive.DISK_MARGIN + 1024)
    monkeypatch.setattr(archive.shutil, "disk_usage", lambda path: fake)
    with pytest.raises(UserError, match="expands to .* nothing was extracted"):
        safe_extract(arc, tmp_path / "out")
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))
    monkeypatch.setattr(archive.shutil, "disk_usage", lambda path: real)
    safe_extract(arc, tmp_path / "out")
    assert (tmp_path / "out" / "cls" / "a.jpg").read_bytes() == payload
