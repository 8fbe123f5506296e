"""A pipeline of N churnflow components that do nothing, run through kfp.local as `churnflow run` runs
its own: what one task costs before it does any work (a fresh Python process, kfp's executor, the
artifact bookkeeping). pipeline_bench.py times it to show the floor of a run with that many tasks.

Usage: python bench/_noop_pipeline.py TASKS [IMPORTS] [PIPELINE_ROOT]

IMPORTS (comma-separated modules, e.g. sklearn.ensemble,pyarrow.parquet) are imported by every task:
the stack a task that fits or reads a table cannot do without.
"""

# no `from __future__ import annotations`: KFP reads the component's annotations as types

import sys
import tempfile
from pathlib import Path

from churnflow.components.image import churnflow_component


@churnflow_component
def noop_op(previous: int, imports: str) -> int:
    """Nothing but what every task has (a process, kfp's executor, an output parameter) and `imports`."""
    import importlib

    for module in filter(None, imports.split(",")):
        importlib.import_module(module)
    return previous + 1


def main(tasks: int, imports: str, root: Path) -> None:
    from kfp import dsl

    from churnflow.pipelines.local import run_in_kfp_local

    @dsl.pipeline(name="noop")
    def noop_pipeline() -> int:
        task = noop_op(previous=0, imports=imports)
        for _ in range(tasks - 1):
            task = noop_op(previous=task.output, imports=imports)
        return task.output

    root.mkdir(parents=True, exist_ok=True)
    result = run_in_kfp_local(noop_pipeline, root / "kfp", root / "pipeline.log")
    assert result.output == tasks, result.output


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        arguments = [*sys.argv[1:], "", ""]
        main(int(arguments[0]), arguments[1], Path(arguments[2] or tmp))
