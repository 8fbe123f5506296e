"""ONNX Runtime alone on an already-encoded matrix, for score_bench.py (the limit of our model format).

python bench/_onnx_only.py MODEL_DIR TABLE_DIR ROWS BATCH_ROWS [THREADS]
  → JSON: rows, then NAME_seconds and NAME_cpu_seconds for onnx and sklearn (one thread) and, with
    THREADS > 1, onnx_rows_split, sklearn_rows_split (what `churnflow score` runs), onnx_intra_op, sklearn_n_jobs
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime
import pyarrow.dataset as ds

from churnflow.core.artifact import ONNX_FILE, ONNX_INPUT
from churnflow.core.contract import FeatureContract
from churnflow.core.scorer import Scorer
from churnflow.scoring.arrow_encoding import BatchEncoder


def main() -> None:
    model_dir, table, rows, batch_rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    contract = FeatureContract.load(model_dir)
    encoder = BatchEncoder(contract)
    batches = []
    total = 0
    for batch in ds.dataset(table, format="parquet").to_batches(columns=contract.input_columns, batch_size=batch_rows):
        batches.append(np.ascontiguousarray(encoder.encode(batch).features))
        total += len(batches[-1])
        if total >= rows:
            break
    threads = int(sys.argv[5]) if len(sys.argv) > 5 else 1

    def timed(name: str, score) -> None:
        score(batches[0][:10])
        wall, cpu = time.perf_counter(), time.process_time()
        for features in batches:
            score(features)
        result[f"{name}_seconds"] = time.perf_counter() - wall
        result[f"{name}_cpu_seconds"] = time.process_time() - cpu

    result: dict = {"rows": total, "threads": threads}
    timed("onnx", Scorer(model_dir).probability)  # one thread, as serving runs it
    forest = Scorer(model_dir, prefer_compiled=False).sklearn  # n_jobs=None: one job, as the baseline runs
    timed("sklearn", lambda features: forest.predict_proba(features))
    if threads > 1:
        # every evaluator on all cores: ours (rows split across one-thread sessions, exact) and the
        # evaluators' own threads (ONNX Runtime intra-op threads, scikit-learn n_jobs)
        timed("onnx_rows_split", Scorer(model_dir, threads=threads).probability)
        timed("sklearn_rows_split", Scorer(model_dir, prefer_compiled=False, threads=threads).probability)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(
            (Path(model_dir) / ONNX_FILE).read_bytes(), options, providers=["CPUExecutionProvider"]
        )
        timed("onnx_intra_op", lambda features: session.run(None, {ONNX_INPUT: features}))
        threaded = Scorer(model_dir, prefer_compiled=False).sklearn
        threaded.n_jobs = threads
        timed("sklearn_n_jobs", lambda features: threaded.predict_proba(features))
    result["seconds"], result["cpu_seconds"] = result["onnx_seconds"], result["onnx_cpu_seconds"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
