"""ONNX Runtime alone on an already-encoded matrix, for score_bench.py (the limit of our model format).

python bench/_onnx_only.py MODEL_DIR TABLE_DIR ROWS BATCH_ROWS   → JSON: rows, seconds, cpu_seconds
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pyarrow.dataset as ds

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
    scorer = Scorer(model_dir)  # one thread, as `churnflow score` runs it
    scorer.probability(batches[0][:10])
    wall, cpu = time.perf_counter(), time.process_time()
    for features in batches:
        scorer.probability(features)
    result = {"rows": total, "seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}
    forest = scorer.sklearn  # n_jobs=None: one job, as bench/baseline_train.py runs
    wall, cpu = time.perf_counter(), time.process_time()
    for features in batches:
        forest.predict_proba(features)
    result.update(sklearn_seconds=time.perf_counter() - wall, sklearn_cpu_seconds=time.process_time() - cpu)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
