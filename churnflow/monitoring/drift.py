"""Drift: is live traffic still what the deployed model was trained and evaluated on?

Three checks over a window of logged predictions (churnflow.store):

- data drift, per feature, against the training reference saved with the model (reference.json):
  numeric features by PSI over the training deciles and a two-sample Kolmogorov-Smirnov test
  against the reference sample; categorical features by PSI and a chi-square goodness-of-fit test
  over the training levels (plus "missing" and "unseen");
- prediction drift: PSI and KS of the served probabilities against the probabilities the model
  gave the test split at evaluation (`probability_reference` in evaluation.json);
- accuracy drift: precision, recall and ROC-AUC of the logged predictions that have ground truth,
  against the evaluation metrics; a relative precision drop above `precision_drop` (10%) is drift.

Per feature: PSI >= psi_act (0.25 by default; churnflow/monitoring/psi.py), or a significant test (p below
alpha / features, Bonferroni) together with PSI >= psi_watch (0.1), is drift; PSI >= psi_watch or a
significant test alone is "watch". Requiring both for the middle band keeps a large window, where KS flags
even negligible shifts, from retraining the model for nothing, and a small window, where PSI is noisy, from
the same.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from churnflow.core.artifact import DEFAULT_MODEL_NAME, EVALUATION_FILE, REFERENCE_FILE
from churnflow.core.errors import ChurnflowError
from churnflow.core.released_model import ReleasedModel
from churnflow.monitoring.psi import psi
from churnflow.monitoring.reference import DECILES, MISSING_BIN, UNSEEN_BIN, load_reference, numeric_bins
from churnflow.monitoring.thresholds import DEFAULT_THRESHOLDS, DEFAULT_WINDOW, Thresholds

REFERENCE_SAMPLE = 2000
OK, WATCH, DRIFT, INSUFFICIENT, UNAVAILABLE = "ok", "watch", "drift", "insufficient data", "unavailable"
NO_DRIFT, NOT_JUDGED = "no drift", "not judged"  # the two verdicts besides DRIFT


# -- statistics -------------------------------------------------------------------------------------


def status_of(psi_value: float, p_value: float | None, p_threshold: float, thresholds: Thresholds) -> str:
    significant = p_value is not None and p_value < p_threshold
    if psi_value >= thresholds.psi_act or (significant and psi_value >= thresholds.psi_watch):
        return DRIFT
    if psi_value >= thresholds.psi_watch or significant:
        return WATCH
    return OK


def numeric_drift(spec: dict[str, Any], values: np.ndarray, p_threshold: float, thresholds: Thresholds) -> dict:
    edges = spec["edges"]
    counts = np.bincount(numeric_bins(values, edges), minlength=len(edges) + 1)
    live = counts / max(1, len(values))
    value = psi(spec["fractions"], live)
    statistic = p_value = None
    if spec.get("sample"):
        result = stats.ks_2samp(values, np.asarray(spec["sample"], dtype="float64"))
        statistic, p_value = float(result.statistic), float(result.pvalue)
    return {
        "kind": "numeric",
        "test": "ks" if p_value is not None else None,
        "psi": value,
        "statistic": statistic,
        "p_value": p_value,
        "status": status_of(value, p_value, p_threshold, thresholds),
        "bins": [_edge_label(edges, i) for i in range(len(edges) + 1)],
        "reference_fractions": list(spec["fractions"]),
        "live_fractions": live.tolist(),
        "reference_mean": spec.get("mean"),
        "live_mean": float(values.mean()) if len(values) else None,
    }


def categorical_drift(
    spec: dict[str, Any], levels: list[Any], reference_rows: int, p_threshold: float, thresholds: Thresholds
) -> dict:
    bins = list(spec["bins"])
    known = set(bins) - {MISSING_BIN, UNSEEN_BIN}
    position = {b: i for i, b in enumerate(bins)}
    counts = np.zeros(len(bins))
    for level in levels:
        name = MISSING_BIN if level is None or level != level else str(level)
        counts[position[name if name in known or name == MISSING_BIN else UNSEEN_BIN]] += 1
    rows = max(1, len(levels))
    reference = np.asarray(spec["fractions"], dtype="float64")
    value = psi(reference, counts / rows)
    # Chi-square test of homogeneity (training counts vs live counts over the bins either side uses):
    # unlike a goodness-of-fit test against the training fractions, it allows for the training
    # sample's own noise, which otherwise dominates once the live window outgrows the training split.
    used = (reference > 0) | (counts > 0)
    statistic = p_value = None
    if used.sum() >= 2:
        table = np.vstack([reference[used] * reference_rows, counts[used]])
        result = stats.chi2_contingency(table, correction=False)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    return {
        "kind": "categorical",
        "test": "chi-square" if p_value is not None else None,
        "psi": value,
        "statistic": statistic,
        "p_value": p_value,
        "status": status_of(value, p_value, p_threshold, thresholds),
        "bins": bins,
        "reference_fractions": reference.tolist(),
        "live_fractions": (counts / rows).tolist(),
    }


def _edge_label(edges: list[float], index: int) -> str:
    if not edges:
        return "all"
    if index == 0:
        return f"< {edges[0]:g}"
    if index == len(edges):
        return f">= {edges[-1]:g}"
    return f"[{edges[index - 1]:g}, {edges[index]:g})"


def data_drift(reference: dict[str, Any], features: pd.DataFrame, thresholds: Thresholds) -> dict[str, Any]:
    """Per-feature drift of the window's inputs against the training reference."""
    specs = reference.get("features", {})
    tested = [name for name in specs if name in features.columns]
    p_threshold = thresholds.alpha / max(1, len(tested))
    results = {}
    for name in tested:
        spec = specs[name]
        if spec["kind"] == "numeric":
            values = pd.to_numeric(features[name], errors="coerce").to_numpy(dtype="float64")
            results[name] = numeric_drift(spec, values[~np.isnan(values)], p_threshold, thresholds)
        else:
            rows = int(reference.get("rows") or 1000)
            results[name] = categorical_drift(spec, features[name].tolist(), rows, p_threshold, thresholds)
    drifted = [name for name, r in results.items() if r["status"] == DRIFT]
    return {
        "status": DRIFT if drifted else (WATCH if any(r["status"] == WATCH for r in results.values()) else OK),
        "p_threshold": p_threshold,
        "drifted": drifted,
        "features": results,
        "missing_features": [name for name in specs if name not in features.columns],
    }


def probability_reference(probability: np.ndarray, sample: int = REFERENCE_SAMPLE) -> dict[str, Any]:
    """The served-probability distribution on the test split, stored in evaluation.json: decile
    edges with bin fractions (for PSI) and a sample (for KS)."""
    probability = np.asarray(probability, dtype="float64")
    edges = sorted(set(np.quantile(probability, DECILES).round(10).tolist()))
    counts = np.bincount(numeric_bins(probability, edges), minlength=len(edges) + 1)
    rows = len(probability)
    picked = np.random.default_rng(0).choice(probability, min(rows, sample), replace=False)
    return {
        "rows": rows,
        "edges": edges,
        "fractions": (counts / rows).tolist(),
        "mean": float(probability.mean()),
        "sample": picked.tolist(),
    }


def prediction_drift(
    reference: dict[str, Any] | None, probability: np.ndarray, thresholds: Thresholds
) -> dict[str, Any]:
    if not reference:
        return {"status": UNAVAILABLE, "note": "evaluation.json has no probability_reference (re-run evaluate)"}
    result = numeric_drift(reference, np.asarray(probability, dtype="float64"), thresholds.alpha, thresholds)
    result["kind"] = "probability"
    return result


def accuracy_drift(evaluation: dict[str, Any] | None, labelled: pd.DataFrame, thresholds: Thresholds) -> dict[str, Any]:
    """Live precision, recall and ROC-AUC on predictions with ground truth vs the evaluation's."""
    from sklearn.metrics import precision_score, recall_score, roc_auc_score

    reference = {k: (evaluation or {}).get(k) for k in ("precision", "recall", "roc_auc")}
    out: dict[str, Any] = {"labelled": len(labelled), "reference": reference, "live": {}, "precision_drop": None}
    if evaluation is None:
        return {**out, "status": UNAVAILABLE, "note": f"no {EVALUATION_FILE} in the model directory"}
    if len(labelled) < thresholds.min_labelled:
        note = f"{len(labelled)} predictions have ground truth; at least {thresholds.min_labelled} are needed"
        return {**out, "status": INSUFFICIENT, "note": note}
    truth = labelled["churned"].to_numpy(dtype="int64")
    predicted = labelled["churn"].to_numpy(dtype="int64")
    probability = labelled["probability"].to_numpy(dtype="float64")
    positives = int(predicted.sum())
    live = {
        "precision": float(precision_score(truth, predicted, zero_division=0)) if positives else None,
        "recall": float(recall_score(truth, predicted, zero_division=0)) if truth.any() else None,
        "roc_auc": float(roc_auc_score(truth, probability)) if 0 < truth.sum() < len(truth) else None,
        "predicted_positive": positives,
        "actual_positive": int(truth.sum()),
    }
    out["live"] = live
    ref_precision = reference["precision"]
    if live["precision"] is None or not ref_precision:
        return {**out, "status": INSUFFICIENT, "note": "no predicted churners with ground truth to measure precision"}
    drop = (ref_precision - live["precision"]) / ref_precision
    out["precision_drop"] = drop
    for name in ("recall", "roc_auc"):
        if live[name] is not None and reference[name]:
            out[f"{name}_drop"] = (reference[name] - live[name]) / reference[name]
    return {**out, "status": DRIFT if drop > thresholds.precision_drop else OK}


# -- the whole check --------------------------------------------------------------------------------


def features_frame(predictions: pd.DataFrame) -> pd.DataFrame:
    """The logged inputs (one JSON object per prediction) as columns."""
    if predictions.empty:
        return pd.DataFrame()
    records = [f if isinstance(f, dict) else json.loads(f) for f in predictions["features"]]
    return pd.DataFrame.from_records(records, index=predictions.index)


def check(
    predictions: pd.DataFrame,
    labelled: pd.DataFrame,
    reference: dict[str, Any],
    evaluation: dict[str, Any] | None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """All three drift checks on a window of predictions (and those of them with ground truth)."""
    rows = len(predictions)
    notes: list[str] = []
    if rows < thresholds.min_rows:
        notes.append(f"{rows} predictions in the window; at least {thresholds.min_rows} are needed for data drift")
        data = {"status": INSUFFICIENT, "features": {}, "drifted": []}
        prediction = {"status": INSUFFICIENT}
    else:
        data = data_drift(reference, features_frame(predictions), thresholds)
        prediction = prediction_drift(
            (evaluation or {}).get("probability_reference"), predictions["probability"].to_numpy(), thresholds
        )
    metrics = (evaluation or {}).get("metrics") if evaluation else None
    accuracy = accuracy_drift(metrics, labelled, thresholds)
    reasons = []
    for name in data.get("drifted", []):
        r = data["features"][name]
        p = f", {r['test']} p={r['p_value']:.2g}" if r.get("p_value") is not None else ""
        reasons.append(f"feature {name}: PSI {r['psi']:.3f}{p}")
    if prediction.get("status") == DRIFT:
        reasons.append(f"prediction distribution: PSI {prediction['psi']:.3f}")
    if accuracy["status"] == DRIFT:
        reasons.append(
            f"precision {accuracy['live']['precision']:.3f} is {accuracy['precision_drop']:.1%} below the "
            f"evaluation's {accuracy['reference']['precision']:.3f} (limit {thresholds.precision_drop:.0%})"
        )
    for part in (prediction, accuracy):
        if part.get("note"):
            notes.append(part["note"])
    return {
        "drift": bool(reasons),
        "reasons": reasons,
        "notes": notes,
        "thresholds": asdict(thresholds),
        "window": _window(predictions),
        "data_drift": data,
        "prediction_drift": prediction,
        "accuracy": accuracy,
    }


def _window(predictions: pd.DataFrame) -> dict[str, Any]:
    if predictions.empty:
        return {"rows": 0, "first": None, "last": None}
    return {
        "rows": len(predictions),
        "first": pd.Timestamp(predictions["ts"].min()).isoformat() + "Z",
        "last": pd.Timestamp(predictions["ts"].max()).isoformat() + "Z",
    }


def load_evaluation(path: str | Path) -> dict[str, Any] | None:
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ChurnflowError(f"{path}: not valid JSON ({error})") from None


def run_check(
    store_url: str,
    model_dir: str | Path,
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    window: int | None = DEFAULT_WINDOW,
    since: dt.datetime | None = None,
    any_version: bool = False,
    evaluation_path: str | Path | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """The drift check `churnflow drift` and the KFP component run: store window vs model directory.

    The report also counts the window's predictions of other versions of the model (`other_versions`,
    unless `any_version` counts them all) and carries the verdict (`verdict`, see `judge`)."""
    from churnflow.store.database import PredictionStore

    model_dir = Path(model_dir)
    if not (model_dir / REFERENCE_FILE).is_file():
        raise ChurnflowError(f"model directory {model_dir}: no reference.json (the drift baseline); is it a model?")
    # The served model's own loader: its digests cover reference.json, so a tampered baseline is refused.
    released = ReleasedModel.load(model_dir)
    reference = load_reference(released.directory)
    version = released.version
    evaluation = load_evaluation(evaluation_path or model_dir / EVALUATION_FILE)
    if window is not None and window < 1:
        raise ChurnflowError(f"--window: expected at least 1 prediction, got {window}")
    store = PredictionStore(store_url)
    try:
        predictions = store.call(
            "reading predictions",
            store.read_predictions,
            model_name=model_name,
            model_version=None if any_version else version or None,
            window=None if since is not None and window is None else window,
            since=since,
        )
        labelled = store.call("reading outcomes", store.labelled, predictions)
        others = {} if any_version else _other_versions(store, model_name, version, window, since)
    finally:
        store.close()
    report = check(predictions, labelled, reference, evaluation, thresholds)
    report.update(
        model_name=model_name,
        model_version=version,
        model_dir=str(model_dir),
        store=store.display_url,
        checked_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        selection={"window": window, "since": since.isoformat() if since else None, "any_version": any_version},
        other_versions=others,
    )
    report["verdict"] = judge(report).outcome
    return report


def _other_versions(
    store: Any, model_name: str, version: str, window: int | None, since: dt.datetime | None
) -> dict[str, int]:
    """Predictions in the same window (newest N, or since a time) made by other versions of the model.

    After a retrain the window is mostly the previous version's predictions, which the check leaves
    out; a check that then says "0 predictions, no drift" must say why."""
    frame = store.call(
        "reading predictions",
        store.read_predictions,
        model_name=model_name,
        window=None if since is not None and window is None else window,
        since=since,
    )
    versions = frame.loc[frame["model_version"] != version, "model_version"]
    return {str(v): int(n) for v, n in versions.value_counts().items()}


@dataclass(frozen=True)
class Verdict:
    """What a drift check concludes, decided in this one place so that `churnflow drift` (exit status)
    and the KFP drift check (whether the pipeline retrains) can never disagree.

    `outcome` is DRIFT, NO_DRIFT or NOT_JUDGED: too few predictions of this model version to judge while
    the window holds other versions' (after a retrain, before the new version has served enough).
    Drift found in what there is still counts as drift."""

    outcome: str
    model_version: str
    rows: int
    other_versions: dict[str, int]
    reasons: tuple[str, ...] = ()

    @property
    def retrain(self) -> bool:
        """Only drift retrains: a window not judged says nothing about the model."""
        return self.outcome == DRIFT

    def headline(self) -> str:
        """The verdict in a few words, with the reasons for drift."""
        if self.outcome == DRIFT:
            return "DRIFT: " + "; ".join(self.reasons)
        if self.outcome == NOT_JUDGED:
            return f"not judged: {self.rows} predictions of {self.model_version}, the rest are other versions'"
        return NO_DRIFT

    def lines(self) -> list[str]:
        """The note on other versions (if any) and the verdict line, as the terminal shows them."""
        lines = []
        if self.other_versions:
            listed = ", ".join(
                f"{n} of {v}" for v, n in sorted(self.other_versions.items(), key=lambda item: (-item[1], item[0]))
            )
            lines.append(
                f"  note: the window also holds {sum(self.other_versions.values())} predictions of other model "
                f"versions ({listed}), not counted: only {self.model_version}'s are; --any-version counts them all"
            )
        lines.append(f"  → {self.headline()}")
        return lines


def judge(report: dict[str, Any]) -> Verdict:
    """The verdict of a report from `check`/`run_check` (its thresholds and `other_versions` included)."""
    rows = report["window"]["rows"]
    others = dict(report.get("other_versions") or {})
    min_rows = report.get("thresholds", {}).get("min_rows", DEFAULT_THRESHOLDS.min_rows)
    if report["drift"]:
        outcome = DRIFT
    elif others and rows < min_rows:
        outcome = NOT_JUDGED
    else:
        outcome = NO_DRIFT
    return Verdict(outcome, str(report.get("model_version", "")), rows, others, tuple(report.get("reasons", ())))


def summary(report: dict[str, Any]) -> str:
    """A few readable lines for the terminal."""
    lines = [
        f"drift check of {report.get('model_name')} {report.get('model_version')} over "
        f"{report['window']['rows']} predictions ({report['accuracy']['labelled']} with ground truth)"
    ]
    for name, r in report["data_drift"].get("features", {}).items():
        p = f"  {r['test']} p={r['p_value']:.3g}" if r.get("p_value") is not None else ""
        lines.append(f"  {name:<20} PSI {r['psi']:.3f}{p}  {r['status']}")
    pred = report["prediction_drift"]
    if "psi" in pred:
        lines.append(f"  {'(probability)':<20} PSI {pred['psi']:.3f}  {pred['status']}")
    acc = report["accuracy"]
    if acc.get("precision_drop") is not None:
        lines.append(
            f"  precision {acc['live']['precision']:.3f} vs {acc['reference']['precision']:.3f} "
            f"(drop {acc['precision_drop']:.1%})  {acc['status']}"
        )
    lines += [f"  note: {n}" for n in report["notes"]]
    lines += judge(report).lines()  # the last line is the verdict
    return "\n".join(lines)
