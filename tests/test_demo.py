"""The README's main command works as written: scripts/demo.sh trains, releases, serves and answers."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_demo_script_answers_the_original_request(tmp_path):
    env = {
        **os.environ,
        "CHURNFLOW_DEMO_EXIT": "1",
        "CHURNFLOW_DEMO_OUTPUT": str(tmp_path / "demo"),
        "CHURNFLOW_PORT": str(free_port()),
    }
    result = subprocess.run(
        ["bash", str(ROOT / "scripts/demo.sh")], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    v1 = json.loads(lines[lines.index("--- v1 (the original design's request):") + 1])
    (prediction,) = v1["predictions"]
    assert prediction["churn"] in (0, 1) and 0 <= prediction["probability"] <= 1
    v2 = json.loads(lines[lines.index("--- v2 (Open Inference Protocol, one input per column):") + 1])
    outputs = {o["name"]: o for o in v2["outputs"]}
    assert outputs["probability"]["data"] == [prediction["probability"]]
    assert outputs["churn"]["datatype"] == "INT64"
    assert (tmp_path / "demo" / "model" / "contract.json").is_file()
