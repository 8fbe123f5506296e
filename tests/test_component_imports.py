"""Every name a KFP component imports inside its body exists.

A lightweight component's imports live inside the function, because KFP ships the function's source to
the task: nothing checks them until a task runs (ruff sees a valid import statement, and the module
imports fine without the component being called). A name moved to another module fails only in the
pipeline run, minutes later, as "task 'tune-op' failed". This reads every function-level
`from churnflow... import ...` under components/ and pipelines/ and looks each name up.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def function_level_imports() -> list[tuple[str, int, str, str]]:
    found = []
    for path in sorted([*ROOT.glob("components/**/*.py"), *ROOT.glob("pipelines/*.py")]):
        tree = ast.parse(path.read_text(), filename=str(path))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("churnflow"):
                    for alias in node.names:
                        found.append((str(path.relative_to(ROOT)), node.lineno, node.module, alias.name))
    return found


def test_every_name_imported_inside_a_component_exists() -> None:
    imports = function_level_imports()
    assert len(imports) > 20, "the walk found too few function-level imports: is the tree where it was?"
    missing = []
    for where, line, module, name in imports:
        loaded = importlib.import_module(module)
        if not hasattr(loaded, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{where}:{line}: from {module} import {name}")
    assert not missing, "names that do not exist (a task would fail at run time):\n" + "\n".join(missing)
