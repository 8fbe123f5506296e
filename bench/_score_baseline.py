"""The original design's bulk approach, for score_bench.py: pandas read, get_dummies, predict_proba, CSV write.

python bench/_score_baseline.py MODEL_DIR TABLE.csv OUTPUT.csv
"""

from __future__ import annotations

import sys

import joblib
import pandas as pd

from churnflow.core.contract import FeatureContract


def main() -> None:
    model_dir, table, output = sys.argv[1:4]
    contract = FeatureContract.load(model_dir)
    model = joblib.load(f"{model_dir}/model.joblib")
    model.n_jobs = None  # one process, as the original script ran
    frame = pd.read_csv(table)
    features = pd.get_dummies(frame[contract.input_columns], columns=list(contract.categorical), dtype="float64")
    features = features.reindex(columns=contract.feature_columns, fill_value=0.0)
    features = features.fillna(contract.numeric_fill)
    frame["probability"] = model.predict_proba(features.to_numpy())[:, 1]
    frame[["customer_id", "probability"]].to_csv(output, index=False)


if __name__ == "__main__":
    main()
