"""A released model directory, read once: the one loader of serving, bulk scoring, evaluation and drift.

    ReleasedModel.open(uri)    resolve the URI (local path, s3://, minio://, gs://, KServe's storage)
    ReleasedModel.load(dir)    pinned metadata.json digest first, every file's SHA-256 next, then the
                               contract, the scorer (compiled forest or scikit-learn) and the calibrator
    .probability(features)     the served probability: scorer, then calibrator
    .churn(probability)        the threshold rule (churnflow/core/threshold.py)
    .explain(features)         each column's push up or down (churnflow/core/explain.py)

Every path that answers a probability goes through one of these objects, so "serving, `churnflow
score` and the evaluate step give the same probability for the same row" holds by construction, not
by three loaders kept in step. Nothing half-read is ever returned: any check that fails raises.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from churnflow.core.artifact import METADATA_FILE, MODEL_FILE, sha256_file, verify_files
from churnflow.core.calibration import Calibrator, load_calibrator
from churnflow.core.contract import FeatureContract
from churnflow.core.errors import ChurnflowError
from churnflow.core.scorer import Scorer
from churnflow.core.threshold import churn_flags


@dataclass(frozen=True)
class ReleasedModel:
    """Everything one model version needs to answer; built whole or not at all."""

    directory: Path
    contract: FeatureContract
    scorer: Scorer
    calibrator: Calibrator
    metadata: dict[str, Any]

    @classmethod
    def open(
        cls, uri: str | Path, prefer_compiled: bool = True, metadata_sha256: str | None = None, threads: int = 1
    ) -> ReleasedModel:
        """Loads the model at a path or URI (see resolve_model_dir)."""
        return cls.load(resolve_model_dir(str(uri)), prefer_compiled, metadata_sha256, threads=threads)

    @classmethod
    def load(
        cls, directory: str | Path, prefer_compiled: bool = True, metadata_sha256: str | None = None, threads: int = 1
    ) -> ReleasedModel:
        """Checks metadata.json against the digest the deployment pinned (when one is given) before
        reading anything else, then every file's SHA-256, then reads the contract, calibrator and model.

        The per-file digests live beside the files they guard, so on their own they catch corruption,
        not tampering; the pinned digest of metadata.json (rendered into the InferenceService by the
        deploy step) extends the check to whoever can write the model bucket. The pickle is not loaded
        when a compiled forest scores (see scorer.py).

        `threads` is for bulk paths only: the threads one scoring call may use (ONNX Runtime intra-op
        threads, or scikit-learn's). Serving keeps 1, since KServe already runs requests concurrently."""
        directory = Path(directory).resolve()  # one release, even if its symlink is swapped while we read
        if metadata_sha256 is not None:
            check_metadata_digest(directory, metadata_sha256)
        metadata = verify_files(directory)
        return cls(
            directory=directory,
            contract=FeatureContract.load(directory),
            scorer=Scorer(
                directory,
                prefer_compiled=prefer_compiled,
                sklearn_sha256=metadata["files"][MODEL_FILE],
                threads=threads,
            ),
            calibrator=load_calibrator(directory),
            metadata=metadata,
        )

    @property
    def version(self) -> str:
        return str(self.metadata.get("model_version", ""))

    def raw_probability(self, features: np.ndarray) -> np.ndarray:
        """The forest's own churn probability, before calibration."""
        return self.scorer.probability(np.ascontiguousarray(features, dtype=np.float64))

    def probability(self, features: np.ndarray) -> np.ndarray:
        """The served probability of each row of a model matrix: the scorer, then the calibrator."""
        return self.calibrator.apply(self.raw_probability(features))

    def churn(self, probability: np.ndarray) -> np.ndarray:
        """0/1 per row: churn when the probability is above the contract's threshold."""
        return churn_flags(probability, self.contract.threshold)

    def explain(self, features: np.ndarray, top: int = 3) -> list[dict[str, Any]]:
        """Per row: the served probability and churn, and every input column's contribution.

        The decomposition walks the scikit-learn trees, so the pickle is read here (after its SHA-256
        matches the one recorded at load) even when the compiled forest scores."""
        from churnflow.core.explain import explain_rows  # scipy: imported when an explanation is asked for

        model = self.scorer.sklearn
        served = self.calibrator.apply(model.predict_proba(features)[:, 1])
        return explain_rows(model, self.contract, features, served, top=top)


def resolve_model_dir(uri: str) -> Path:
    """A local path as is; s3://, minio:// and gs:// downloaded through fsspec (the storage extra, credentials
    from the AWS_* environment); any other URI (pvc://, https://, ...) by KServe's storage helper."""
    if "://" not in uri or uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    from churnflow.core.storage import download_directory, is_object_uri  # fsspec only when a URI needs it

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
