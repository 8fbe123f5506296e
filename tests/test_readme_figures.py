"""Every benchmark figure the manual quotes is one a bench wrote to bench/results/, beside its command.

The benchmark blocks of docs/benchmarks.md are rendered from the JSON files by bench/readme.py; a
hand-edited figure, a figure without a results file, or a results file without its provenance fails here.
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
    "pipeline_bench-1000",
    "score_bench",
    "ceiling_bench",
}


def bench_readme():
    spec = importlib.util.spec_from_file_location("bench_readme", ROOT / "bench" / "readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmarks_page_quotes_the_results_as_written():
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    names = set(re.findall(r"<!-- bench:([\w.-]+) -->", page))
    assert names >= BLOCKS, f"docs/benchmarks.md lacks the blocks {sorted(BLOCKS - names)}"
    assert bench_readme().rendered_page(page) == page, "docs/benchmarks.md figures differ: run bench/readme.py --write"
    # One place for the figures: a stale copy elsewhere in the manual would never be re-rendered.
    pages = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    stale = [p.name for p in pages if p.name != "benchmarks.md" and "<!-- bench:" in p.read_text()]
    assert not stale, f"benchmark blocks outside docs/benchmarks.md: {stale}"


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
