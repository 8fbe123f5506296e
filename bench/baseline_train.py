"""The original design's training script (shared/original-design.md, Step 1), on our synthetic table.

The benchmark's baseline: pandas get_dummies(drop_first=True), an 80/20 split, a default
RandomForestClassifier(n_estimators=100, random_state=42) and joblib.dump. Only the data source
differs (our seeded synthetic generator instead of its coin-flip target), so both sides train on
the same rows. Its predictions come from one predict_proba (what predict does inside), so the test
ROC-AUC costs it nothing extra; it goes to `<output>.metrics.json` for the benchmark.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import joblib
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, classification_report, roc_auc_score
from sklearn.model_selection import train_test_split

from churnflow.core.synthetic import synthetic_customers


def main(rows: int, output: Path) -> None:
    df = synthetic_customers(rows).drop(columns=["customer_id"])
    df = pd.get_dummies(df, columns=["contract_type"], drop_first=True)
    features, target = df.drop("churn", axis=1), df["churn"]
    x_train, x_test, y_train, y_test = train_test_split(features, target, test_size=0.2, random_state=42)
    model = RandomForestClassifier(n_estimators=100, random_state=42)
    model.fit(x_train, y_train)
    probability = model.predict_proba(x_test)
    predicted = model.classes_[probability.argmax(axis=1)]  # exactly model.predict(x_test)
    print(f"Accuracy: {accuracy_score(y_test, predicted)}")
    print(classification_report(y_test, predicted))
    joblib.dump(model, output)
    roc_auc = roc_auc_score(y_test, probability[:, 1])
    output.with_suffix(".metrics.json").write_text(json.dumps({"roc_auc": roc_auc, "test_rows": len(y_test)}))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(int(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tmp) / "churn_model.pkl")
