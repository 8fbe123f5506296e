"""ChurnModel: the KServe model class, and the predictor's whole request path in one place.

    KServe decodes the HTTP body
      → preprocess: v1 instances / bare object / v2 tensors → Aligner → model matrix   (400 on bad input)
      → predict:    Scorer (ONNX Runtime, or scikit-learn) → probability, churn; metrics
      → postprocess: v1 {"predictions": [{"churn", "probability"}]} or a v2 InferResponse

KServe times each of the three steps into its request_*_seconds histograms.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from churnflow.artifact import MODEL_FILE, verify_files
from churnflow.contract import FeatureContract
from churnflow.decision import Calibrator, load_calibrator
from churnflow.errors import ChurnflowError
from churnflow.predictor.alignment import Aligned, Aligner, RequestError
from churnflow.predictor.explain import explain_rows
from churnflow.predictor.metrics import ModelMetrics
from churnflow.predictor.scoring import Scorer
from churnflow.reference import load_reference
from churnflow.store.logger import PredictionLogger

log = logging.getLogger("churnflow.predictor")

DEFAULT_MAX_BATCH = 10_000
RETRY_LOAD_SECONDS = 10.0
V2_NUMERIC_TYPES = {
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
}


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


@dataclass
class Batch:
    """One request on its way through the steps."""

    protocol: str
    aligned: Aligned
    request_id: str | None = None
    probability: np.ndarray | None = None
    churn: np.ndarray | None = None
    explanation: list[dict[str, Any]] | None = None
    payload: Any = None
    """the decoded request, kept for the prediction log (customer ids are read off it in the background)"""


def resolve_model_dir(uri: str) -> Path:
    """A local path as is; s3://, minio:// and gs:// downloaded through fsspec (the storage extra, credentials
    from the AWS_* environment); any other URI (pvc://, https://, ...) by KServe's storage helper."""
    if "://" not in uri or uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    from churnflow.storage import download_directory, is_object_uri

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


def load_model_dir(directory: Path, prefer_compiled: bool = True) -> LoadedModel:
    """Verifies every file's SHA-256 first, then reads contract, reference and model."""
    metadata = verify_files(directory)
    contract = FeatureContract.load(directory)
    return LoadedModel(
        directory=directory,
        contract=contract,
        aligner=Aligner(contract),
        scorer=Scorer(directory, prefer_compiled=prefer_compiled),
        metadata=metadata,
        reference=load_reference(directory),
        calibrator=load_calibrator(directory),
    )


class ChurnModel(Model):
    """Serves one churn model directory over KServe's v1 and v2 protocols."""

    prediction_log: PredictionLogger | None = None
    """set by serve(store_url=...): every scored batch is handed to it (asynchronous, never blocks)"""

    def __init__(
        self, name: str, model_dir: str, max_batch: int = DEFAULT_MAX_BATCH, prefer_compiled: bool = True
    ) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.max_batch = max_batch
        self.prefer_compiled = prefer_compiled
        self.loaded: LoadedModel | None = None
        self.metrics: ModelMetrics | None = None
        self.load_error: str | None = None
        self._next_load_attempt = 0.0
        self._fingerprint: tuple = ()

    # -- loading ----------------------------------------------------------------------------------

    def load(self) -> bool:
        """Loads the model if none is serving yet (KServe calls this again while not ready; throttled)."""
        if self.ready:
            return True
        if time.monotonic() < self._next_load_attempt:
            return False
        return self.reload()

    def reload(self) -> bool:
        """Reads the model directory again and swaps the new model in whole; True if it was installed.

        Any failure (missing or damaged file, SHA-256 mismatch, unreadable pickle) keeps whatever was
        serving, logs one line saying why, and leaves `load_error` for the repository API's answer.
        """
        try:
            loaded = load_model_dir(resolve_model_dir(self.model_dir), self.prefer_compiled)
        except Exception as error:  # nothing half-loaded is ever installed, whatever went wrong
            self.load_error = f"{error}" if isinstance(error, ChurnflowError) else f"{type(error).__name__}: {error}"
            self._next_load_attempt = time.monotonic() + RETRY_LOAD_SECONDS
            state = "keeps serving the previous model" if self.loaded else "is not ready"
            log.error(
                "model %r not loaded from %s: %s; the server %s", self.name, self.model_dir, self.load_error, state
            )
            return False
        self._install(loaded)
        self._fingerprint = _fingerprint(self.model_dir)
        return True

    def watch(self, interval: float) -> None:
        """Re-loads in the background whenever the model directory changes (e.g. `churnflow run`
        re-released it); a bad new model is refused and the serving one stays."""
        if interval <= 0:
            return

        def loop() -> None:
            while True:
                time.sleep(interval)
                if _fingerprint(self.model_dir) != self._fingerprint:
                    self.reload()
                    self._fingerprint = _fingerprint(self.model_dir)

        threading.Thread(target=loop, name="churnflow-model-watch", daemon=True).start()

    def _install(self, loaded: LoadedModel) -> None:
        metrics = ModelMetrics(self.name, loaded.contract.numeric, loaded.reference)
        metrics.set_model_info(
            version=loaded.metadata.get("model_version", ""),
            sha256=loaded.metadata["files"][MODEL_FILE],
            trained_at=loaded.metadata.get("trained_at", ""),
            backend=loaded.scorer.backend,
            loaded_at=time.time(),
        )
        self.loaded, self.metrics, self.load_error = loaded, metrics, None
        self.ready = True
        log.info(
            "model %r version %s ready (%s, %d features)",
            self.name,
            loaded.metadata.get("model_version"),
            loaded.scorer.backend,
            len(loaded.contract.feature_columns),
        )

    def __getstate__(self) -> dict[str, Any]:
        # Prometheus metric children hold locks: rebuilt in each worker process after unpickling.
        state = self.__dict__.copy()
        state["metrics"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from churnflow.predictor.server import (
            configure_logging,
            freeze_startup_objects,
            install_http_hooks,
            register_served,
        )

        configure_logging()  # a spawned worker process: KServe set up its own loggers only
        self.__dict__.update(state)
        if self.loaded is not None:
            self._install(self.loaded)

        register_served(self)
        install_http_hooks()
        freeze_startup_objects()  # this worker is about to serve: see there

    # -- v2 metadata --------------------------------------------------------------------------------

    def get_input_types(self) -> list[dict[str, Any]]:
        if self.loaded is None:
            return []
        contract = self.loaded.contract
        numeric = [
            {"name": c, "datatype": "INT64" if contract.numeric_dtypes.get(c) == "int64" else "FP64", "shape": [-1]}
            for c in contract.numeric
        ]
        return numeric + [{"name": c, "datatype": "BYTES", "shape": [-1]} for c in contract.categorical]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [
            {"name": "churn", "datatype": "INT64", "shape": [-1]},
            {"name": "probability", "datatype": "FP64", "shape": [-1]},
        ]

    # -- the request path ---------------------------------------------------------------------------

    def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Batch:
        loaded = self.loaded
        if loaded is None:
            raise InvalidInput("model is not loaded")
        try:
            if isinstance(payload, InferRequest):
                return Batch("v2", self._decode_v2(payload, loaded.aligner), request_id=payload.id, payload=payload)
            return Batch("v1", self._decode_v1(payload, loaded.aligner), payload=payload)
        except RequestError as error:
            raise InvalidInput(str(error)) from None

    def _check_rows(self, rows: int, label: str) -> None:
        if rows == 0:
            raise RequestError(f"{label}: expected at least one row, got none")
        if rows > self.max_batch:
            raise RequestError(f"{label}: {rows} rows exceed the batch limit of {self.max_batch}")

    def _decode_v1(self, payload: Any, aligner: Aligner) -> Aligned:
        if isinstance(payload, bytes | bytearray):
            try:
                payload = orjson.loads(payload)
            except orjson.JSONDecodeError as error:
                raise RequestError(f"body: not valid JSON ({error})") from None
        if not isinstance(payload, dict):
            raise RequestError(f'body: expected a JSON object with "instances", got {type(payload).__name__}')
        for key in ("instances", "inputs"):
            if key in payload:
                records = payload[key]
                if not isinstance(records, list):
                    raise RequestError(f"{key}: expected a list of instances, got {type(records).__name__}")
                self._check_rows(len(records), key)
                return aligner.encode_records(records, key)
        # The original design's body: one customer as a bare object.
        return aligner.encode_records([payload], "body")

    def _decode_v2(self, request: InferRequest, aligner: Aligner) -> Aligned:
        inputs = request.inputs or []
        if not inputs:
            raise RequestError("inputs: expected at least one input tensor")
        tensors = {tensor.name: _tensor_values(tensor) for tensor in inputs}
        if len(inputs) == 1 and inputs[0].name not in aligner.known:
            name = inputs[0].name
            shape, values = tensors[name]
            expected = len(aligner.input_columns)
            if len(shape) != 2 or shape[1] != expected:
                raise RequestError(
                    f"inputs[{name!r}]: a single input must have shape [rows, {expected}] "
                    f"(columns {', '.join(aligner.input_columns)}), got {shape}"
                )
            self._check_rows(shape[0], "inputs")
            records = [values[i : i + expected] for i in range(0, len(values), expected)]
            return aligner.encode_records(records, "inputs", numeric_strings=inputs[0].datatype == "BYTES")
        for tensor in inputs:
            shape = tensors[tensor.name][0]
            if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
                raise RequestError(f"inputs[{tensor.name!r}]: expected shape [rows] or [rows, 1], got {shape}")
            if tensor.name in aligner.numeric and tensor.datatype == "BYTES":
                raise RequestError(f"inputs[{tensor.name!r}]: expected a numeric datatype (INT64 or FP64), got BYTES")
        counts = {len(values) for name, (_, values) in tensors.items() if name in aligner.known}
        if len(counts) > 1:
            raise RequestError(f"inputs: every input must have the same number of rows, got {sorted(counts)}")
        rows = counts.pop() if counts else 0
        self._check_rows(rows, "inputs")
        return aligner.encode_columns({name: values for name, (_, values) in tensors.items()}, rows)

    def predict(self, batch: Batch, headers: dict[str, str] | None = None) -> Batch:
        loaded = self.loaded
        assert loaded is not None  # preprocess refused the request otherwise
        batch.probability = loaded.calibrator.apply(loaded.scorer.probability(batch.aligned.features))
        batch.churn = (batch.probability > loaded.contract.threshold).astype("int64")
        if self.metrics is not None:
            self.metrics.observe(batch.probability, batch.churn, batch.aligned)
        if self.prediction_log is not None:
            # v2 answers with this id; v1 callers can send X-Request-Id to know theirs.
            prediction_log = self.prediction_log
            batch.request_id = (
                batch.request_id or (headers or {}).get("x-request-id") or prediction_log.next_request_id()
            )
            version = loaded.metadata.get("model_version", "")
            prediction_log.submit(
                batch.request_id, version, loaded.contract, batch.aligned, batch.probability, batch.churn, batch.payload
            )
        return batch

    def explain(self, batch: Batch, headers: dict[str, str] | None = None) -> Batch:
        """KServe's :explain route: the prediction plus each column's push up or down (predictor/explain.py)."""
        loaded = self.loaded
        assert loaded is not None
        raw = loaded.scorer.sklearn.predict_proba(batch.aligned.features)[:, 1]
        served = loaded.calibrator.apply(raw)
        batch.explanation = explain_rows(loaded.scorer.sklearn, loaded.contract, batch.aligned.features, served)
        return batch

    def postprocess(self, batch: Batch, headers: dict[str, str] | None = None) -> dict[str, Any] | InferResponse:
        if batch.explanation is not None:
            return {"explanations": batch.explanation}
        probability, churn = batch.probability.tolist(), batch.churn.tolist()
        if batch.protocol == "v2":
            rows = len(churn)
            return InferResponse(
                response_id=batch.request_id or str(uuid.uuid4()),
                model_name=self.name,
                model_version=self.loaded.metadata.get("model_version") if self.loaded else None,
                infer_outputs=[
                    InferOutput(name="churn", shape=[rows], datatype="INT64", data=churn),
                    InferOutput(name="probability", shape=[rows], datatype="FP64", data=probability),
                ],
            )
        return {"predictions": [{"churn": c, "probability": p} for c, p in zip(churn, probability, strict=True)]}


def _fingerprint(model_dir: str) -> tuple:
    """What changes when a model directory is re-released: its real path and metadata file's stat."""
    if "://" in model_dir and not model_dir.startswith("file://"):
        return ()
    path = Path(model_dir.removeprefix("file://"))
    try:
        stat = (path / "metadata.json").stat()
    except OSError:
        return (str(path.resolve()),)
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _tensor_values(tensor: Any) -> tuple[list[int], list[Any]]:
    """A v2 input's shape and its values as one flat Python list (row-major), checked against each other.

    JSON tensors are read from their lists directly (numpy costs ~30 µs a request for one row); binary
    tensors go through KServe's as_numpy.
    """
    datatype = tensor.datatype
    if datatype != "BYTES" and datatype not in V2_NUMERIC_TYPES:
        raise RequestError(f"inputs[{tensor.name!r}]: unsupported datatype {datatype}")
    shape = [int(d) for d in tensor.shape]
    if any(d < 0 for d in shape):
        raise RequestError(f"inputs[{tensor.name!r}]: shape {shape} has a negative dimension")
    if getattr(tensor, "_raw_data", None) is not None:
        try:
            values = tensor.as_numpy().reshape(-1).tolist()
        except Exception as error:  # raw bytes that do not fit the shape or datatype
            raise RequestError(f"inputs[{tensor.name!r}]: {error}") from None
    else:
        values = _flatten(tensor.data)
    size = 1
    for dimension in shape:
        size *= dimension
    if len(values) != size:
        raise RequestError(f"inputs[{tensor.name!r}]: shape {shape} needs {size} values, got {len(values)}")
    if datatype == "BYTES":
        values = [_text(v) for v in values]
    return shape, values


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).tolist()
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:  # iterative, so deeply nested input cannot exhaust the recursion limit
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _text(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("inputs: BYTES data is not valid UTF-8") from None
    return value
