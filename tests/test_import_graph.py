"""The import graph: `lint-imports` keeps the contracts of pyproject.toml's [tool.importlinter].

The layers run cli > pipelines > components | predictor > campaigns | monitoring | evaluation >
scoring | store > core, and no sibling modules or packages import each other in a cycle. The repository
keeps predictor/, components/ and pipelines/ at its top and installs them as churnflow.predictor,
.components and .pipelines; import-linter (through grimp) reads a package from one directory, so the
test lays the package out as installed, with symbolic links, and runs `lint-imports` on that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAPPED = {"predictor": "predictor", "components": "components", "pipelines": "pipelines"}
"""churnflow.<name> → the repository directory it is installed from ([tool.setuptools.package-dir])."""


def installed_layout(repo: Path, into: Path) -> Path:
    """A `churnflow` package directory under `into` that links every file of repo/churnflow and the
    mapped top-level directories, so grimp sees the same module names the editable install imports."""
    package = into / "churnflow"
    package.mkdir()
    for entry in (repo / "churnflow").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, directory in MAPPED.items():
        (package / name).symlink_to(repo / directory)
    return into


def lint_imports(repo: Path, workdir: Path) -> subprocess.CompletedProcess:
    layout = installed_layout(repo, workdir)
    command = [str(Path(sys.executable).with_name("lint-imports")), str(repo / "pyproject.toml"), "--no-cache"]
    # lint-imports puts its working directory first on sys.path: the laid-out package must win there.
    env = {**os.environ, "PYTHONPATH": str(layout)}
    return subprocess.run(command, cwd=layout, env=env, capture_output=True, text=True, timeout=300)


def test_the_import_graph_keeps_its_layers_and_has_no_cycle(tmp_path: Path) -> None:
    done = lint_imports(ROOT, tmp_path)
    if done.returncode != 0:
        pytest.fail(f"lint-imports found broken contracts:\n{done.stdout}{done.stderr}", pytrace=False)
    assert "Contracts: 2 kept, 0 broken." in done.stdout, done.stdout


def test_an_upward_import_breaks_the_check(tmp_path: Path) -> None:
    """The check can fail: the same tree with the core importing the predictor is refused, by name."""
    repo = tmp_path / "repo"
    (repo / "churnflow").mkdir(parents=True)
    for entry in (ROOT / "churnflow").iterdir():
        if entry.name not in ("core", "__pycache__"):
            (repo / "churnflow" / entry.name).symlink_to(entry)
    core = repo / "churnflow" / "core"
    core.mkdir()
    for entry in (ROOT / "churnflow" / "core").glob("*.py"):
        (core / entry.name).symlink_to(entry)
    (core / "upward.py").write_text("from churnflow.predictor import model  # noqa: F401\n")
    for name in MAPPED.values():
        (repo / name).symlink_to(ROOT / name)
    (repo / "pyproject.toml").symlink_to(ROOT / "pyproject.toml")
    layout = tmp_path / "layout"
    layout.mkdir()
    done = lint_imports(repo, layout)
    assert done.returncode != 0, done.stdout
    assert "churnflow.core.upward -> churnflow.predictor.model" in done.stdout, done.stdout
