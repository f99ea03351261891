"""The documentation points at files that exist, and no tracked file carries work-history
markers (numbered work sessions or tracker items) in place of saying what a thing is."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Repository paths the documents cite start with one of these folders, or are one of these files.
PREFIXES = ("app/", "backend/", "bench/", "configs/", "data_tools/", "docs/", "experiments/",
            "models/", "tests/", ".ci/")
TOP_FILES = {"README.md", "train.py", "eval.py", "demo.sh", "pytest.ini", "conftest.py",
             "requirements.txt", "requirements-common.txt", "requirements-deploy.txt",
             "requirements-dev.txt", "requirements-gpu.txt"}
# Placeholders (<dir>, $out), globs and elisions are not paths to check.
NOT_A_PATH = re.compile(r"[<>*?{}\[\]$|~]|\.\.\.|…")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
TOKEN_SPLIT = re.compile(r"[\s\"'`=(),;]+")
STRIP = ".,:;)\"'"


def documents(root: Path = ROOT) -> list[Path]:
    """README.md, docs/**/*.md, experiments/**/*.md and experiments/**/*.sh."""
    files = [root / "README.md"]
    for folder, patterns in (("docs", ("*.md",)), ("experiments", ("*.md", "*.sh"))):
        for pattern in patterns:
            files += sorted((root / folder).rglob(pattern))
    return [f for f in files if f.is_file()]


def repo_paths(text: str) -> set[str]:
    """The repository-relative paths among the words of ``text``."""
    found = set()
    for token in TOKEN_SPLIT.split(text):
        token = token.strip(STRIP)
        if token.startswith("./"):
            token = token[2:]
        if not token or NOT_A_PATH.search(token) or "://" in token:
            continue
        if token.startswith(PREFIXES) or token in TOP_FILES:
            found.add(token)
    return found


def cited(path: Path, root: Path = ROOT) -> list[tuple[str, Path]]:
    """(as written, where it must exist) for every path a document cites: repository paths in
    code spans and code blocks of markdown (every word of a shell script), from the repository
    root; markdown link targets from the document's own folder."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".sh":
        return [(p, root / p) for p in sorted(repo_paths(text))]
    out = []
    for block in FENCE.findall(text):
        out += [(p, root / p) for p in repo_paths(block)]
    prose = FENCE.sub("", text)
    for span in CODE_SPAN.findall(prose):
        out += [(p, root / p) for p in repo_paths(span)]
    for target in LINK.findall(prose):
        target = target.split("#", 1)[0]
        if target and "://" not in target and not target.startswith("mailto:"):
            out.append((target, path.parent / target))
    return out


def missing(root: Path = ROOT) -> list[str]:
    return [f"{doc.relative_to(root)}: {written}"
            for doc in documents(root) for written, where in cited(doc, root)
            if not where.exists()]


def test_every_cited_path_exists():
    assert missing() == []


def test_the_documents_cite_many_paths():
    """Guards against a scan that finds nothing and so passes on anything."""
    paths = {written for doc in documents() for written, _ in cited(doc)}
    assert len(documents()) >= 10
    assert len(paths) >= 100, sorted(paths)
    assert {"docs/findings.md", "experiments/run_all.sh", "configs/recipes/small_data.yaml"} <= paths


def test_a_bogus_path_is_caught(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "experiments").mkdir()
    (tmp_path / "docs" / "real.md").write_text("real\n")
    (tmp_path / "train.py").write_text("")
    (tmp_path / "README.md").write_text(
        "See `docs/real.md`, `docs/nowhere.md`, [a page](docs/gone.md#part) and\n"
        "[this one](docs/real.md). Placeholders are fine: `experiments/results/<study>/`, "
        "`docs/*.md`.\n\n```bash\npython bench/no_such_script.py --out runs/x\n```\n")
    (tmp_path / "experiments" / "study.sh").write_text(
        "$P train.py --recipe experiments/recipes/missing.yaml --output $out/x\n")
    assert sorted(missing(tmp_path)) == [
        "README.md: bench/no_such_script.py", "README.md: docs/gone.md",
        "README.md: docs/nowhere.md", "experiments/study.sh: experiments/recipes/missing.yaml"]


def test_no_work_history_markers():
    """No tracked file names a work session or a tracker item by number; say what a thing is."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("git or the repository's .git is not available")
    pattern = "ses" + "sion ?[0-9]|is" + "sue ?[0-9]"
    result = subprocess.run(["git", "grep", "-n", "-i", "-I", "-E", pattern], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr
    assert result.stdout == ""


SCRIPTS = {"train.py": "train", "eval.py": "eval", "data_tools/split.py": "data_tools.split",
           "bench/throughput.py": "bench.throughput"}


def readme_commands(root: Path = ROOT) -> list[tuple[str, list[str]]]:
    """(script, arguments) of every ``python <script> ...`` line in README.md's code blocks
    (continuations joined, comments and optional ``[...]`` parts dropped, elided lines out)."""
    import shlex

    commands = []
    for block in FENCE.findall((root / "README.md").read_text(encoding="utf-8")):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if "..." in line or "python" not in line:
                continue
            words = shlex.split(re.sub(r"\[[^\]]*\]", "", line))
            script = next((w for w in words if w in SCRIPTS), None)
            if script:
                commands.append((script, words[words.index(script) + 1:]))
    return commands


def test_every_readme_command_parses():
    """Every command the README shows is one its script accepts (flags, choices, values)."""
    import importlib

    commands = readme_commands()
    assert len(commands) >= 25 and {s for s, _ in commands} == set(SCRIPTS)
    for script, args in commands:
        module = importlib.import_module(SCRIPTS[script])
        try:
            module.parse_args(args)
        except SystemExit:
            pytest.fail(f"README: python {script} {' '.join(args)} does not parse")
