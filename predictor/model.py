"""ChurnModel: the KServe model class, and the predictor's whole request path in one place.

    KServe decodes the HTTP body
      → preprocess: v1 instances / bare object, or v2 tensors (codec_v2) → Aligner → model matrix
                    (400 on bad input); the request keeps the model version it started on
      → predict:    ReleasedModel (churnflow/core): scorer (ONNX Runtime, or scikit-learn), calibrator,
                    threshold rule → probability, churn; metrics; prediction log
      → postprocess: v1 {"predictions": [{"churn", "probability"}]} or a v2 InferResponse (codec_v2)

KServe times each of the three steps into its request_*_seconds histograms.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import sklearn.ensemble  # noqa: F401 - see below
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest, InferResponse

import churnflow.core.explain  # noqa: F401 - see below
from churnflow.core.artifact import MODEL_FILE
from churnflow.core.errors import ChurnflowError
from churnflow.core.released_model import ReleasedModel, normalize_sha256
from churnflow.monitoring.reference import load_reference
from churnflow.predictor import codec_v2
from churnflow.predictor.logs import configure_logging
from churnflow.predictor.metrics import ModelMetrics
from churnflow.predictor.request_decoding import Aligned, Aligner, RequestError
from churnflow.predictor.settings import PredictorSettings
from churnflow.predictor.watch import fingerprint, start_watcher
from churnflow.predictor.worker_setup import prepare_worker
from churnflow.store.logger import PredictionLogger

# Loading a released model no longer imports scikit-learn and SciPy (bulk scoring does not need them),
# but a serving process does: the :explain route and a reload (`--watch`) use them. They are imported
# with this module, so in the server and in every worker, which unpickles the model and so imports this
# module before it serves; not in a first :explain request's event loop (about 0.7 s that stalled it)
# nor in a worker's first reload (which then took longer than a watch interval).

log = logging.getLogger("churnflow.predictor")

DEFAULT_MAX_BATCH = 10_000
RETRY_LOAD_SECONDS = 10.0


@dataclass(frozen=True)
class LoadedModel:
    """One model version as serving holds it: the released model plus the request aligner and the drift
    reference its metrics count into; swapped in whole, never half-built."""

    released: ReleasedModel
    aligner: Aligner
    reference: dict[str, Any] | None

    @classmethod
    def load(cls, uri: str, prefer_compiled: bool = True, metadata_sha256: str | None = None) -> LoadedModel:
        released = ReleasedModel.open(uri, prefer_compiled, metadata_sha256)
        return cls(released, Aligner(released.contract), load_reference(released.directory))


@dataclass
class Batch:
    """One request on its way through the steps."""

    protocol: str
    aligned: Aligned
    loaded: LoadedModel
    """the model version this request started on: a hot reload mid-request never mixes two versions"""
    request_id: str | None = None
    probability: np.ndarray | None = None
    churn: np.ndarray | None = None
    explanation: list[dict[str, Any]] | None = None
    payload: Any = None
    """the decoded request, kept for the prediction log (customer ids are read off it in the background)"""


class ChurnModel(Model):
    """Serves one churn model directory over KServe's v1 and v2 protocols."""

    prediction_log: PredictionLogger | None = None
    """set by serve(store_url=...): every scored batch is handed to it (asynchronous, never blocks)"""
    settings: PredictorSettings | None = None
    """set by serve(): pickled with the model, so each spawned worker installs the same settings"""

    def __init__(
        self,
        name: str,
        model_dir: str,
        max_batch: int = DEFAULT_MAX_BATCH,
        prefer_compiled: bool = True,
        metadata_sha256: str | None = None,
    ) -> None:
        super().__init__(name)
        self.metadata_sha256 = normalize_sha256(metadata_sha256)
        """the pinned digest of metadata.json: a model directory that does not match is refused"""
        self.model_dir = model_dir
        self.max_batch = max_batch
        self.prefer_compiled = prefer_compiled
        self.loaded: LoadedModel | None = None
        self.metrics: ModelMetrics | None = None
        self.load_error: str | None = None
        self.watch_seconds = 0.0
        self.unloaded = False
        """set by a repository unload: no automatic reload until a load request or a new release"""
        self.repository_api = False
        """whether the model repository's load and unload requests are served (off unless enabled)"""
        self.workers = 1
        """how many processes serve this model over HTTP (set by serve()); a repository load or unload
        reaches only one of them, so with several it is refused"""
        self._next_load_attempt = 0.0
        self._fingerprint: tuple = ()

    # -- loading ----------------------------------------------------------------------------------

    def load(self) -> bool:
        """Loads the model if none is serving yet (KServe calls this again while not ready; throttled)."""
        if self.ready:
            return True
        if self.unloaded or time.monotonic() < self._next_load_attempt:
            return False
        return self.reload()

    def reload(self) -> bool:
        """Reads the model directory again and swaps the new model in whole; True if it was installed.

        Any failure (missing or damaged file, SHA-256 mismatch, unreadable pickle) keeps whatever was
        serving, logs one line saying why, and leaves `load_error` for the repository API's answer.
        """
        seen = fingerprint(self.model_dir)  # before reading: a release during the read is seen next time
        try:
            loaded = LoadedModel.load(self.model_dir, self.prefer_compiled, self.metadata_sha256)
        except Exception as error:  # nothing half-loaded is ever installed, whatever went wrong
            self.load_error = f"{error}" if isinstance(error, ChurnflowError) else f"{type(error).__name__}: {error}"
            self._next_load_attempt = time.monotonic() + RETRY_LOAD_SECONDS
            self._fingerprint = seen  # a refused release is not retried until the directory changes again
            state = "keeps serving the previous model" if self.loaded else "is not ready"
            log.error(
                "model %r not loaded from %s: %s; the server %s", self.name, self.model_dir, self.load_error, state
            )
            return False
        self._install(loaded)
        self._fingerprint = seen
        self.unloaded = False
        return True

    def unload(self) -> None:
        """Stops answering (not ready) and drops the model, until reload() or a new release."""
        self.unloaded, self.ready = True, False
        self.loaded = self.metrics = None
        log.info("model %r unloaded", self.name)

    def watch(self, interval: float) -> None:
        """Re-loads in the background whenever the model directory changes (e.g. `churnflow run`
        re-released it); a bad new model is refused and the serving one stays.

        Every process that serves runs its own watcher: the server process here, and each spawned
        worker again when it unpickles the model (see __setstate__), so with several workers every
        one of them picks up a release within one interval (plus the time to load it)."""
        self.watch_seconds = interval
        self._start_watcher()

    def _start_watcher(self) -> None:
        start_watcher(self, self.watch_seconds)

    def _install(self, loaded: LoadedModel) -> None:
        released = loaded.released
        metrics = ModelMetrics(self.name, released.contract.numeric, loaded.reference)
        metrics.set_model_info(
            version=released.version,
            sha256=released.metadata["files"][MODEL_FILE],
            trained_at=released.metadata.get("trained_at", ""),
            backend=released.scorer.backend,
            loaded_at=time.time(),
        )
        self.loaded, self.metrics, self.load_error = loaded, metrics, None
        self.ready = True
        log.info(
            "model %r version %s ready (%s, %d features)",
            self.name,
            released.metadata.get("model_version"),
            released.scorer.backend,
            len(released.contract.feature_columns),
        )

    def __getstate__(self) -> dict[str, Any]:
        # Prometheus metric children hold locks: rebuilt in each worker process after unpickling.
        state = self.__dict__.copy()
        state["metrics"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A spawned worker process: KServe unpickles the model there before it serves.
        configure_logging()  # KServe set up its own loggers only
        self.__dict__.update(state)
        if self.loaded is not None:
            self._install(self.loaded)
        self._start_watcher()  # this process serves too: it must see releases on its own
        prepare_worker(self)

    # -- v2 metadata --------------------------------------------------------------------------------

    def get_input_types(self) -> list[dict[str, Any]]:
        if self.loaded is None:
            return []
        contract = self.loaded.released.contract
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
                aligned = codec_v2.decode(payload, loaded.aligner, self.max_batch)
                return Batch("v2", aligned, loaded, request_id=payload.id, payload=payload)
            return Batch("v1", self._decode_v1(payload, loaded.aligner), loaded, payload=payload)
        except RequestError as error:
            raise InvalidInput(str(error)) from None

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
                codec_v2.check_rows(len(records), key, self.max_batch)
                return aligner.encode_records(records, key)
        # A bare object: one customer, the body of the classic POST /predict curl request.
        return aligner.encode_records([payload], "body")

    def predict(self, batch: Batch, headers: dict[str, str] | None = None) -> Batch:
        released = batch.loaded.released
        batch.probability = released.probability(batch.aligned.features)
        batch.churn = released.churn(batch.probability)
        if self.metrics is not None:
            self.metrics.observe(batch.probability, batch.churn, batch.aligned)
        if self.prediction_log is not None:
            # v2 answers with this id; v1 callers can send X-Request-Id to know theirs.
            prediction_log = self.prediction_log
            batch.request_id = (
                batch.request_id or (headers or {}).get("x-request-id") or prediction_log.next_request_id()
            )
            prediction_log.submit(
                batch.request_id,
                released.version,
                released.contract,
                batch.aligned,
                batch.probability,
                batch.churn,
                batch.payload,
            )
        return batch

    def explain(self, batch: Batch, headers: dict[str, str] | None = None) -> Batch:
        """KServe's :explain route: the prediction plus each column's push up or down (churnflow/core/explain.py)."""
        batch.explanation = batch.loaded.released.explain(batch.aligned.features)
        return batch

    def postprocess(self, batch: Batch, headers: dict[str, str] | None = None) -> dict[str, Any] | InferResponse:
        if batch.explanation is not None:
            return {"explanations": batch.explanation}
        probability, churn = batch.probability.tolist(), batch.churn.tolist()
        if batch.protocol == "v2":
            version = batch.loaded.released.metadata.get("model_version")
            return codec_v2.encode(self.name, version, batch.request_id, churn, probability)
        return {"predictions": [{"churn": c, "probability": p} for c, p in zip(churn, probability, strict=True)]}
