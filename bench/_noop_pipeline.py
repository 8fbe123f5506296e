"""A pipeline of N churnflow components that do nothing, run through kfp.local as `churnflow run` runs
its own: what one task costs before it does any work (a fresh Python process, kfp's executor, the
artifact bookkeeping). pipeline_bench.py times it to show the floor of a run with that many tasks.

Usage: python bench/_noop_pipeline.py TASKS PIPELINE_ROOT
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from churnflow.components.image import churnflow_component


@churnflow_component
def noop_op(previous: int) -> int:
    """Nothing but what every task has: a process, kfp's executor, an output parameter."""
    return previous + 1


def main(tasks: int, root: Path) -> None:
    from kfp import dsl

    from churnflow.pipelines.local import run_in_kfp_local

    @dsl.pipeline(name="noop")
    def noop_pipeline() -> int:
        task = noop_op(previous=0)
        for _ in range(tasks - 1):
            task = noop_op(previous=task.output)
        return task.output

    result = run_in_kfp_local(noop_pipeline, root / "kfp", root / "pipeline.log")
    assert result.output == tasks, result.output


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(int(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tmp))
