"""Every benchmark figure the README quotes is one a bench wrote to bench/results/, beside its command.

The README's benchmark blocks are rendered from the JSON files by bench/readme.py; a hand-edited
figure, a figure without a results file, or a results file without its provenance fails here.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = {
    "serve_bench-asyncio",
    "serve_bench-uvloop",
    "request_bench-asyncio",
    "soak_bench-asyncio-store",
    "soak_bench-uvloop-store",
    "pipeline_bench",
}


def bench_readme():
    spec = importlib.util.spec_from_file_location("bench_readme", ROOT / "bench" / "readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_quotes_the_benchmark_results_as_written():
    readme = (ROOT / "README.md").read_text()
    names = set(re.findall(r"<!-- bench:([\w.-]+) -->", readme))
    assert names >= BLOCKS, f"README lacks the blocks {sorted(BLOCKS - names)}"
    assert bench_readme().rendered_readme(readme) == readme, "README figures differ: run bench/readme.py --write"


def test_every_results_file_says_where_and_when_it_was_measured():
    files = sorted((ROOT / "bench" / "results").glob("*.json"))
    assert {f.stem for f in files} >= BLOCKS
    for path in files:
        document = json.loads(path.read_text())
        assert re.fullmatch(r"[0-9a-f]{40}", document["commit"]), path
        assert re.match(r"\d{4}-\d\d-\d\dT", document["date"]), path
        assert {"cpu", "cpus", "memory_gib", "os", "python"} <= set(document["machine"]), path
        assert document["command"].startswith(".venv/bin/python bench/"), path
        assert document["figures"], path
