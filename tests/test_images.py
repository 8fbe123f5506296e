"""Issue 4: the two images, proven without a Docker engine.

hadolint lints both Dockerfiles; their structure is checked (slim base, non-root user, nothing but the
virtual environment copied into the final stage); and each image's Python environment is built the
way its Dockerfile builds it — the same scripts/image-install.sh in a fresh venv — then used: the serve
environment starts the model server and answers, the train environment runs the whole pipeline.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
HADOLINT = str(Path(sys.executable).with_name("hadolint"))
DOCKERFILES = {"train": ROOT / "Dockerfile.train", "serve": ROOT / "Dockerfile.serve"}


def stages(dockerfile: Path) -> list[list[str]]:
    """Instructions per build stage (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    result: list[list[str]] = [[]]  # the first holds what comes before the first FROM (ARGs)
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            result.append([])
        result[-1].append(line)
    return result


def test_hadolint_passes_both_dockerfiles():
    # and the test-only storage-initializer image tests/test_containers.py runs
    initializer = ROOT / "tests/containers/Dockerfile.storage-initializer"
    result = subprocess.run(
        [HADOLINT, *map(str, DOCKERFILES.values()), str(initializer)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_container_script_passes_shellcheck():
    assert shutil.which("shellcheck"), "shellcheck is missing: bash scripts/system-deps.sh installs it"
    scripts = [str(ROOT / "scripts" / name) for name in ("containers.sh", "test.sh")]
    result = subprocess.run(["shellcheck", "--severity=style", *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("extra", ["train", "serve"])
def test_dockerfile_structure(extra):
    preamble, build, final = stages(DOCKERFILES[extra])
    # one base for both stages: python:3.12-slim unless the build passes BASE_IMAGE (scripts/containers.sh)
    assert preamble == ["ARG BASE_IMAGE=python:3.12-slim"]
    assert build[0] == "FROM ${BASE_IMAGE} AS build" and final[0] == "FROM ${BASE_IMAGE}"
    assert f"RUN bash scripts/image-install.sh /opt/venv {extra}" in build
    assert any(i.startswith("USER ") and i.split()[1] not in ("0", "root") for i in final)
    # the final stage gets the venv and a user, nothing that could leave build tools behind
    assert not [i for i in final if i.startswith("RUN") and "useradd" not in i]
    if extra == "train":  # defect 2c: the KFP 2.2 launcher's artifact folders belong to the image's user
        assert any("mkdir -p /minio /s3 /gcs" in i and "chown 10001:10001 /minio /s3 /gcs" in i for i in final)
        assert not [i for i in final if i.startswith("ENTRYPOINT")]  # kfp.local would prefix it to every task
    assert [i for i in final if i.startswith("COPY")] == ["COPY --from=build /opt/venv /opt/venv"]
    copied = {i.split()[1] for i in build if i.startswith("COPY ")}
    ignored = (ROOT / ".dockerignore").read_text()
    for path in copied - {"pyproject.toml"}:
        assert f"!{path.rstrip('/')}" in ignored.replace("/\n", "\n") or f"!{path}" in ignored, path


@pytest.fixture(scope="module")
def image_envs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    envs = {}
    for extra in ("train", "serve"):
        subprocess.run(
            ["bash", str(ROOT / "scripts/image-install.sh"), str(root / extra), extra],
            check=True,
            capture_output=True,
            text=True,
            timeout=900,
        )
        envs[extra] = root / extra
    return envs


@pytest.mark.slow
def test_serve_environment_has_no_kfp_and_answers(image_envs, model_dir, tmp_path):
    python = str(image_envs["serve"] / "bin/python")
    assert subprocess.run([python, "-c", "import kfp"], capture_output=True).returncode != 0
    pins = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    assert re.search(r"^kubernetes==(\d+)\.", pins, re.M) and int(re.search(r"^kubernetes==(\d+)", pins, re.M)[1]) < 37
    port = free_port()
    # exactly what the InferenceService passes to the container
    log = tmp_path / "serve.log"
    server = subprocess.Popen(
        [python, "-m", "churnflow.predictor", f"--model_dir={model_dir}", "--model_name=churn", f"--http_port={port}"],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=tmp_path,
    )  # as in the image: no source tree on sys.path
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/models/churn/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        row = {"tenure": 12, "usage": 50, "age": 30, "monthly_charges": 70, "contract_type": "Month-to-month"}
        assert server.poll() is None, log.read_text()
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/models/churn:predict", json={"instances": [row]})
        assert answer.status_code == 200 and set(answer.json()["predictions"][0]) == {"churn", "probability"}
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.slow
def test_train_environment_runs_the_pipeline(image_envs, tmp_path):
    churnflow = str(image_envs["train"] / "bin/churnflow")
    result = subprocess.run(
        [churnflow, "run", "--output", str(tmp_path / "run"), "--set", "tune=false"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "run" / "model" / "model.onnx").is_file()
    assert subprocess.run([str(image_envs["train"] / "bin/python"), "-c", "import kfp, kfp.kubernetes"]).returncode == 0
