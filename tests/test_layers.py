"""The application's floors: each package of ``app`` imports only from the floors below it,
no module imports another in a circle, and only ``app/run`` knows a run folder's file names.

Floors, bottom up (app/__init__.py): util, config, data, build, run, inspect, train, study.
Imports are read from the source (module level and inside functions alike), so a cycle
cannot hide in a function body.
"""
import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[1] / "app"
FLOORS = ["util", "config", "data", "build", "run", "inspect", "train", "study"]
# What only app/run may name: the files of a run folder (app/run/folder.py).
RUN_FILES = {"config.yaml", "state.json", "metrics.csv", "best.json", "best.pdparams",
             "last.pdparams", "last.pdopt", "predictions.csv", "pretrained.json"}


def module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict:
    return {module_name(p): p for p in sorted(APP.rglob("*.py"))}


def project_imports(path: Path, known: set) -> set:
    """The ``app`` modules a source file imports (``from app.x import y`` counts app.x.y
    when that is a module, else app.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "app"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "app":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def floor(module: str) -> int:
    parts = module.split(".")
    return FLOORS.index(parts[1]) if len(parts) > 1 else -1  # app itself: below every floor


def test_every_module_belongs_to_a_floor():
    stray = [m for m in modules() if m != "app" and m.split(".")[1] not in FLOORS]
    assert not stray, f"modules outside the floors {FLOORS}: {stray}"


def test_no_module_imports_from_a_higher_floor():
    known = set(modules())
    upward = []
    for name, path in modules().items():
        if name == "app":  # test_app_itself_imports_only_the_process_set_up
            continue
        for imported in project_imports(path, known):
            if imported != "app" and floor(imported) > floor(name):
                upward.append(f"{name} -> {imported}")
    assert not upward, "imports from a higher floor: " + ", ".join(upward)


def test_app_itself_imports_only_the_process_set_up():
    assert project_imports(APP / "__init__.py", set(modules())) == {"app.util.runtime"}


def test_no_import_cycle():
    known = set(modules())
    graph = {name: sorted(project_imports(path, known) & known - {"app", name})
             for name, path in modules().items()}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in graph[node]:
            # a package's __init__ holds a docstring only, so importing app.x.y runs nothing
            # of app.x; edges go module to module
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node)


def test_package_inits_import_nothing_of_the_project():
    for path in APP.glob("*/__init__.py"):
        assert not project_imports(path, set(modules())), path


def test_only_app_run_names_a_run_folders_files():
    """String literals that name a run folder's files appear in app/run only (docstrings and
    comments may mention them)."""
    named = []
    for path in APP.rglob("*.py"):
        if path.parent.name == "run":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr)
                      and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and id(node) not in docstrings and node.value in RUN_FILES:
                named.append(f"{path.relative_to(APP.parent)}:{node.lineno} {node.value!r}")
    assert not named, "run-folder file names outside app/run: " + ", ".join(named)


def test_the_checks_see_a_violation(tmp_path):
    """The checks above read real imports: an upward import in a scratch module is found."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from app.study.runner import run_study\n")
    assert project_imports(source, set(modules())) == {"app.study.runner"}
    assert floor("app.study.runner") > floor("app.data.dataset")
