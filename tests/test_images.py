"""The two Dockerfiles, read: hadolint lints them, and their structure is checked (one base for both stages,
non-root user, nothing but the virtual environment copied into the final stage, the KFP launcher's folders).
The images themselves are built and run in tests/test_containers.py (the serve image has no kfp; the
train image runs the pipelines)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
