"""The README's main command works as written: scripts/demo.sh trains, releases, serves and answers.

It writes runs/latest, where `churnflow serve` and `churnflow drift` are shown looking (issue 17), and a
model refused by the gate is reported as such, with `churnflow run`'s exit status 4.
"""

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
    v1 = json.loads(lines[lines.index("--- v1 (the classic churn request):") + 1])
    (prediction,) = v1["predictions"]
    assert prediction["churn"] in (0, 1) and 0 <= prediction["probability"] <= 1
    v2 = json.loads(lines[lines.index("--- v2 (Open Inference Protocol, one input per column):") + 1])
    outputs = {o["name"]: o for o in v2["outputs"]}
    assert outputs["probability"]["data"] == [prediction["probability"]]
    assert outputs["churn"]["datatype"] == "INT64"
    assert (tmp_path / "demo" / "model" / "contract.json").is_file()


def test_demo_says_trained_but_not_released_and_exits_4_when_nothing_can_be_served(tmp_path):
    env = {
        **os.environ,
        "CHURNFLOW_DEMO_EXIT": "1",
        "CHURNFLOW_DEMO_OUTPUT": str(tmp_path / "demo"),
        "CHURNFLOW_PORT": str(free_port()),
    }
    result = subprocess.run(
        ["bash", str(ROOT / "scripts/demo.sh"), "--set", "tune=false", "--set", "min_roc_auc=0.99"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 4, result.stdout + result.stderr
    assert "not deployed: roc_auc" in result.stdout
    assert "demo: the model was trained but not released (the evaluation gate refused it" in result.stderr
    assert not (tmp_path / "demo" / "model").exists() and (tmp_path / "demo" / "candidate").is_dir()
