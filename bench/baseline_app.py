"""The original design's Flask app (shared/original-design.md, Steps 2 and 5): the serving baseline.

Kept as the design wrote it (pandas DataFrame + get_dummies(drop_first=True) + joblib model per request,
Prometheus requests_total / request_latency_seconds) with one fix the benchmark needs to get answers
at all: the design adds missing dummy columns in set order, which scikit-learn rejects
("feature names must be in the same order"), so columns are reindexed to the model's.
Run: CHURN_MODEL=path python baseline_app.py PORT   (or under gunicorn: baseline_app:app)
"""

from __future__ import annotations

import os
import sys

import joblib
import pandas as pd
from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

app = Flask(__name__)
model = joblib.load(os.environ.get("CHURN_MODEL", "churn_model.pkl"))

requests_total = Counter("requests_total", "Total requests")
request_latency = Histogram("request_latency_seconds", "Request latency")


@app.route("/metrics")
def metrics() -> Response:
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


@app.route("/predict", methods=["POST"])
@request_latency.time()
def predict() -> Response:
    requests_total.inc()
    data = request.get_json(force=True)
    df = pd.DataFrame([data])
    df = pd.get_dummies(df, columns=["contract_type"], drop_first=True)
    missing_cols = {"contract_type_One year", "contract_type_Two year"} - set(df.columns)
    for col in missing_cols:
        df[col] = 0
    df = df[list(model.feature_names_in_)]
    prediction = model.predict(df)
    prob = model.predict_proba(df)[0][1]
    return jsonify({"churn": int(prediction[0]), "probability": prob})


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
