"""The layering of fovea/, read from every module's imports (the AST, so an import inside a
function or under TYPE_CHECKING counts too), and the house rules on module names and sizes.

tasks <- tracking <- workers <- platform; the dashboard talks to the API over HTTP only.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

FOVEA = Path(__file__).resolve().parents[1] / "fovea"

# package -> packages of fovea it must never import
FORBIDDEN = {
    "fovea.tasks": ("fovea.platform", "fovea.workers", "fovea.tracking", "fovea.dashboard",
                    "fovea.cli", "fovea.client"),
    "fovea.tracking": ("fovea.platform", "fovea.workers", "fovea.dashboard", "fovea.cli"),
    "fovea.workers": ("fovea.platform", "fovea.dashboard", "fovea.cli"),
    "fovea.platform": ("fovea.dashboard", "fovea.cli"),
}  # fmt: skip
# the dashboard is a client of the HTTP API: these and its own modules, nothing else of fovea
DASHBOARD_MAY_IMPORT = ("fovea.client", "fovea.config", "fovea.dashboard")
MAX_LINES = 600
# File names that several modules share because they play the same role in parallel packages.
SHARED_NAMES = {
    "__init__.py": "every package",
    "app.py": "each front end's application: the FastAPI app (api/), the Streamlit app",
    "model.py": "each task's network (tasks/<task>/)",
    "data.py": "each task's datasets (tasks/<task>/)",
    "loss.py": "each task's losses (tasks/<task>/)",
    "metrics.py": "each task's metrics (tasks/<task>/)",
    "task.py": "each task's Task (tasks/<task>/)",
    "service.py": "each concern's service, the only writer of its rows (platform/<concern>/)",
    "errors.py": "each layer's error types (tasks/, platform/)",
    "jobs.py": "the jobs front door: HTTP routes (api/) and shell commands (cli/), and views",
    "models.py": "the models front door: HTTP routes (api/) and shell commands (cli/), and views",
    "schedules.py": "the schedules front door: routes (api/), commands (cli/), views",
    "drift.py": "the drift front door: routes (api/), dashboard view",
    "weights.py": "the weights front door: routes (api/), commands (cli/); the loader (tasks/)",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(FOVEA.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every fovea module `path` imports, wherever in the file the import stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "fovea" or name.startswith("fovea.")}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(root: Path = FOVEA) -> list[str]:
    """'<module> imports <module>' for each import the layering forbids."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path) if root == FOVEA else _name_under(path, root)
        for target in sorted(imports_of(path)):
            if _forbidden(module, target):
                found.append(f"{module} imports {target}")
    return found


def _name_under(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _forbidden(module: str, target: str) -> bool:
    if _within(module, "fovea.dashboard"):
        return not any(_within(target, ok) for ok in DASHBOARD_MAY_IMPORT)
    if _within(target, "fovea.dashboard"):
        return True  # nobody imports the dashboard; it is started as a process
    for package, banned in FORBIDDEN.items():
        if _within(module, package) and any(_within(target, b) for b in banned):
            return True
    return False


def test_no_module_imports_across_the_layering() -> None:
    assert violations() == []


@pytest.mark.parametrize(
    ("module_path", "line"),
    [
        ("tasks/engine.py", "from fovea.tracking.logger import RunLogger"),
        ("tracking/gate.py", "import fovea.platform.jobs.service"),
        ("workers/runtime.py", "from fovea.platform.store import Job"),
        ("dashboard/views/jobs.py", "from fovea.platform.api import schemas"),
        ("platform/api/app.py", "from fovea.dashboard import common"),
        ("cli/stack.py", "import fovea.dashboard.app"),
    ],
)
def test_a_forbidden_import_is_reported(tmp_path: Path, module_path: str, line: str) -> None:
    """The check fails when someone adds a forbidden import (in a copy of the module, inside
    a function, where a reader of the top of the file would miss it)."""
    root = tmp_path / "fovea"
    copy = root / module_path
    copy.parent.mkdir(parents=True)
    original = (FOVEA / module_path).read_text(encoding="utf-8")
    copy.write_text(original + f"\n\ndef _added():\n    {line}\n", encoding="utf-8")
    module = _name_under(copy, root)
    found = violations(root)
    assert found, f"adding {line!r} to {module} was not reported"
    assert all(v.startswith(module + " imports fovea.") for v in found), found


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {
        str(p.relative_to(FOVEA)): len(p.read_text(encoding="utf-8").splitlines())
        for p in FOVEA.rglob("*.py")
    }
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}


def test_module_names_are_shared_only_by_parallel_roles() -> None:
    by_name: dict[str, list[str]] = defaultdict(list)
    for path in FOVEA.rglob("*.py"):
        if "migrations" not in path.parts:
            by_name[path.name].append(str(path.relative_to(FOVEA)))
    shared = {n: sorted(ps) for n, ps in by_name.items() if len(ps) > 1 and n not in SHARED_NAMES}
    assert shared == {}
