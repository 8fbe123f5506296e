"""Scoring a model matrix: the compiled forest when there is one, scikit-learn otherwise.

The one scorer of a released model (churnflow/core/released_model.py): serving, bulk scoring and the
evaluate step all call it, so they answer the same probability for the same row by construction.

A pickle runs code when it is loaded, so with a compiled forest the scikit-learn model (model.joblib)
is not unpickled to serve: only when `sklearn` is first asked for (the :explain route), and then only
after its SHA-256 matches the one recorded when the model was loaded.

ONNX Runtime sessions hold native state that does not pickle, and KServe starts extra workers by
pickling the model into spawned processes, so the scorer drops its session when pickled and builds
it again on first use in the new process.
"""

from __future__ import annotations

import hashlib
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from churnflow.core.artifact import MODEL_FILE, ONNX_FILE, ONNX_INPUT
from churnflow.core.errors import ChurnflowError

log = logging.getLogger(__name__)

MIN_SLICE_ROWS = 1024
"""Fewest rows worth a thread of their own; a request of a few rows stays on the caller's thread."""


class Scorer:
    """Churn probability for each row of a float64 matrix."""

    def __init__(
        self,
        model_dir: str | Path,
        prefer_compiled: bool = True,
        sklearn_sha256: str | None = None,
        threads: int = 1,
    ) -> None:
        if threads < 1:
            raise ChurnflowError(f"threads: expected a positive number, got {threads}")
        self.model_dir = Path(model_dir)
        self.sklearn_sha256 = sklearn_sha256
        self.threads = threads
        """Threads one call may use: 1 for serving (KServe runs requests concurrently), all cores for bulk."""
        self._sklearn: Any = None
        self._onnx_bytes: bytes | None = None
        self._session: Any = None
        if prefer_compiled and (self.model_dir / ONNX_FILE).is_file():
            self._onnx_bytes = (self.model_dir / ONNX_FILE).read_bytes()
            self._session = self._new_session()
        else:
            self._sklearn = self._load_sklearn()

    @property
    def sklearn(self) -> Any:
        """The scikit-learn forest, unpickled on first use (eagerly when it is what scores)."""
        if self._sklearn is None:
            self._sklearn = self._load_sklearn()
        return self._sklearn

    def _load_sklearn(self) -> Any:
        path = self.model_dir / MODEL_FILE
        if self.sklearn_sha256 is not None:
            # The directory was verified when the model loaded; the pickle is read later, so check again.
            with open(path, "rb") as handle:
                data = handle.read()
            actual = hashlib.sha256(data).hexdigest()
            if actual != self.sklearn_sha256:
                raise ChurnflowError(
                    f"{path}: SHA-256 {actual[:12]}… does not match the recorded {self.sklearn_sha256[:12]}…; "
                    "refusing to load it"
                )
            model = joblib.load(io.BytesIO(data))
        else:
            model = joblib.load(path)
        if hasattr(model, "n_jobs"):
            model.n_jobs = None  # one call, one thread; bulk scoring splits rows instead (see probability)
        return model

    @property
    def backend(self) -> str:
        return "onnxruntime" if self._onnx_bytes is not None else "scikit-learn"

    def _new_session(self) -> Any:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # bulk scoring splits rows instead (see probability)
        options.inter_op_num_threads = 1
        return onnxruntime.InferenceSession(self._onnx_bytes, options, providers=["CPUExecutionProvider"])

    def probability(self, features: np.ndarray) -> np.ndarray:
        """Each row's probability, computed exactly as serving computes it, on `threads` threads.

        A forest (ONNX Runtime or scikit-learn) is split by rows: each slice goes to the one-thread
        evaluator serving uses, the slices at once (both release the GIL). Their own threads would
        split the trees instead and sum them in another order, which moves the last bits (ONNX Runtime
        with 2 intra-op threads changed 19% of the probabilities of a 30-tree forest); by rows, every
        row is summed as serving sums it, whatever the thread count."""
        if self.threads > 1 and len(features) >= 2 * MIN_SLICE_ROWS and self._splits_rows():
            slices = np.array_split(features, min(self.threads, len(features) // MIN_SLICE_ROWS))
            with ThreadPoolExecutor(len(slices) - 1, thread_name_prefix="churnflow-evaluate") as pool:
                rest = [pool.submit(self._one_thread, part) for part in slices[1:]]
                first = self._one_thread(slices[0])
                return np.concatenate([first, *(future.result() for future in rest)])
        return self._one_thread(features)

    def _splits_rows(self) -> bool:
        return self._onnx_bytes is not None or hasattr(self.sklearn, "n_jobs")

    def _one_thread(self, features: np.ndarray) -> np.ndarray:
        if self._onnx_bytes is not None:
            if self._session is None:
                self._session = self._new_session()
            return self._session.run(None, {ONNX_INPUT: features})[0]
        model = self.sklearn
        if hasattr(model, "n_jobs") or self.threads == 1:
            return model.predict_proba(features)[:, 1]
        # HistGradientBoosting already splits by rows with OpenMP threads (each row summed by one
        # thread, so exact); bulk sets their number. Serving (threads=1) is left as it was: the
        # limit is process-wide.
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self.threads, user_api="openmp"):
            return model.predict_proba(features)[:, 1]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_session"] = None
        return state
