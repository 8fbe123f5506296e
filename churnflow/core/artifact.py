"""The model artifact: a directory whose file names the predictor knows.

    model.joblib    the fitted scikit-learn forest (the reference; pickled, so only loaded after
                    its SHA-256 matches metadata.json)
    model.onnx      the same forest compiled for ONNX Runtime (the fast path), when it was compiled
    contract.json   the feature contract (churnflow.core.contract)
    metadata.json   versions, data hash, row counts, hyperparameters, model version and the SHA-256
                    of every other file
    evaluation.json written next to a released model by the deploy step: the metrics it was gated on

KFP gives artifacts no file-name control on a cluster, so storageUri always points at the directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from churnflow.core.errors import ChurnflowError

DEFAULT_MODEL_NAME = "churn"  # the name a model is deployed, served and logged under unless told otherwise
MODEL_FILE = "model.joblib"
ONNX_FILE = "model.onnx"
ONNX_INPUT, ONNX_OUTPUT = "features", "probability"  # the compiled forest's tensor names
METADATA_FILE = "metadata.json"
EVALUATION_FILE = "evaluation.json"
REFERENCE_FILE = "reference.json"
RELEASES_DIR = ".releases"
RELEASES_KEPT = 3


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_metadata(directory: str | Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Writes metadata.json, recording the SHA-256 of every artifact file already in the directory."""
    directory = Path(directory)
    files = {
        p.name: sha256_file(p)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name not in (METADATA_FILE, EVALUATION_FILE)
    }
    metadata = {**metadata, "files": files}
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return metadata


def read_metadata(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / METADATA_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ChurnflowError(f"model directory {directory}: no {METADATA_FILE}") from None
    except ValueError as error:
        raise ChurnflowError(f"{path}: not valid JSON ({error})") from None


def verify_files(directory: str | Path) -> dict[str, Any]:
    """Checks every recorded file against its SHA-256 before anything is unpickled.

    Returns the metadata. Raises ChurnflowError naming the first missing or mismatched file, which
    is what keeps a truncated upload or a tampered pickle from ever reaching joblib.load.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ChurnflowError(f"model directory {directory}: does not exist")
    metadata = read_metadata(directory)
    files = metadata.get("files") or {}
    if MODEL_FILE not in files:
        raise ChurnflowError(f"{directory / METADATA_FILE}: records no SHA-256 for {MODEL_FILE}")
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            raise ChurnflowError(f"model directory {directory}: {name} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ChurnflowError(
                f"model directory {directory}: {name} SHA-256 {actual[:12]}… does not match the "
                f"recorded {expected[:12]}…; refusing to load it"
            )
    return metadata


def publish_directory(source: str | Path, target: str | Path) -> Path:
    """Atomically makes `target` a copy of `source`, so a reader never sees a half-written model.

    The copy lands in `<parent>/.releases/<name>-<random>/` and `target` becomes a symlink to it,
    swapped with os.replace (atomic on POSIX). An interrupted publish leaves the previous release in
    place; the newest few releases are kept for rollback.
    """
    source, target = Path(source), Path(target)
    releases = target.parent / RELEASES_DIR
    releases.mkdir(parents=True, exist_ok=True)
    release = Path(tempfile.mkdtemp(prefix=f"{target.name}-", dir=releases))
    shutil.copytree(source, release, dirs_exist_ok=True)
    if target.exists() and not target.is_symlink():
        # A plain directory from an older layout: move it aside into the releases folder first.
        target.rename(Path(tempfile.mkdtemp(prefix=f"{target.name}-legacy-", dir=releases)) / "model")
    link = target.parent / f".{target.name}.tmp-{os.getpid()}"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(release.relative_to(target.parent))
    os.replace(link, target)
    _prune_releases(releases, keep=release, prefix=f"{target.name}-")
    return release


def _prune_releases(releases: Path, keep: Path, prefix: str) -> None:
    candidates = sorted(
        (p for p in releases.iterdir() if p.name.startswith(prefix) and p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for stale in candidates[RELEASES_KEPT - 1 :]:
        shutil.rmtree(stale, ignore_errors=True)
