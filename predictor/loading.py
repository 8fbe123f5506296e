"""Reading a model directory into a LoadedModel: pinned digest first, every file's SHA-256 next,
then the contract, reference, calibration and forest. Nothing half-read is ever returned."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from churnflow.core.artifact import METADATA_FILE, MODEL_FILE, sha256_file, verify_files
from churnflow.core.calibration import Calibrator, load_calibrator
from churnflow.core.contract import FeatureContract
from churnflow.core.errors import ChurnflowError
from churnflow.monitoring.reference import load_reference
from churnflow.predictor.request_decoding import Aligner
from churnflow.predictor.scoring import Scorer


@dataclass(frozen=True)
class LoadedModel:
    """Everything one model version needs to answer; swapped in whole, never half-built."""

    directory: Path
    contract: FeatureContract
    aligner: Aligner
    scorer: Scorer
    metadata: dict[str, Any]
    reference: dict[str, Any] | None
    calibrator: Calibrator


def resolve_model_dir(uri: str) -> Path:
    """A local path as is; s3://, minio:// and gs:// downloaded through fsspec (the storage extra, credentials
    from the AWS_* environment); any other URI (pvc://, https://, ...) by KServe's storage helper."""
    if "://" not in uri or uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    from churnflow.core.storage import download_directory, is_object_uri

    if is_object_uri(uri):
        try:
            return Path(download_directory(uri, tempfile.mkdtemp(prefix="churnflow-model-")))
        except ChurnflowError as error:
            raise ChurnflowError(f"model URI {error}") from None
    try:
        from kserve_storage import Storage
    except ImportError:
        raise ChurnflowError(
            f"model URI {uri}: downloading it needs KServe's storage helper (pip install kserve-storage)"
        ) from None
    return Path(Storage.download(uri, out_dir=tempfile.mkdtemp(prefix="churnflow-model-")))


def load_model_dir(directory: Path, prefer_compiled: bool = True, metadata_sha256: str | None = None) -> LoadedModel:
    """Checks metadata.json against the digest the deployment pinned (when one is given) before
    reading anything else, then every file's SHA-256, then reads contract, reference and model.

    The per-file digests live beside the files they guard, so on their own they catch corruption,
    not tampering; the pinned digest of metadata.json (rendered into the InferenceService by the
    deploy step) extends the check to whoever can write the model bucket. The pickle is not loaded
    when a compiled forest serves (see scoring.py)."""
    directory = directory.resolve()  # one release, even if its symlink is swapped while we read
    if metadata_sha256 is not None:
        check_metadata_digest(directory, metadata_sha256)
    metadata = verify_files(directory)
    contract = FeatureContract.load(directory)
    return LoadedModel(
        directory=directory,
        contract=contract,
        aligner=Aligner(contract),
        scorer=Scorer(directory, prefer_compiled=prefer_compiled, sklearn_sha256=metadata["files"][MODEL_FILE]),
        metadata=metadata,
        reference=load_reference(directory),
        calibrator=load_calibrator(directory),
    )


def check_metadata_digest(directory: Path, expected: str) -> None:
    path = directory / METADATA_FILE
    try:
        actual = sha256_file(path)
    except FileNotFoundError:
        raise ChurnflowError(f"model directory {directory}: no {METADATA_FILE}") from None
    if actual != expected:
        raise ChurnflowError(
            f"{path}: SHA-256 {actual} does not match the expected {expected} "
            f"($CHURNFLOW_METADATA_SHA256 / --metadata-sha256); refusing the model"
        )


def normalize_sha256(value: str | None, source: str = "--metadata-sha256") -> str | None:
    """A SHA-256 as 64 lowercase hex digits ("sha256:" prefix allowed); None when unset or blank."""
    if value is None or not value.strip():
        return None
    digest = value.strip().lower().removeprefix("sha256:")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ChurnflowError(f"{source}: expected a SHA-256 (64 hex digits), got {value[:80]!r}")
    return digest
