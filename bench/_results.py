"""Where a benchmark's figures go: bench/results/<name>.json, with what is needed to trust them later.

Every file holds the commit measured (and whether the work tree had changes), the UTC date, the
machine (CPU model and count, memory, OS, Python), the exact command line, any note on the conditions
(for example that other work shared the machine) and the figures themselves. docs/benchmarks.md quotes these
files; tests/test_readme_figures.py checks that the figures it quotes are in them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=RESULTS.parent, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kib = next(
        (int(line.split()[1]) for line in _read("/proc/meminfo").splitlines() if line.startswith("MemTotal")), 0
    )
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_kib / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def write_results(name: str, figures: dict[str, Any], note: str = "", path: str | None = None) -> Path:
    """Writes the figures with their provenance; returns the file written."""
    target = Path(path) if path else RESULTS / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "command": shlex.join([".venv/bin/python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "commit": _git("rev-parse", "HEAD").strip(),
        "uncommitted_changes": bool(_git("status", "--porcelain", "--untracked-files=no").strip()),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "note": note,
        "figures": figures,
    }
    target.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    print(f"results written to {target}")
    return target
