"""The model card: one self-contained HTML page (and a short Markdown summary) saying why this model.

The evaluate step writes it as KFP `HTML` and `Markdown` artifacts, so the Kubeflow UI shows it on the
run page, and `churnflow run` copies it to `model-card.html`. It has no scripts and no external styles
or images (charts are inline PNG data URIs): the KFP UI shows HTML artifacts in a sandboxed frame, and
a card mailed or archived beside a model must render the same years later. docs/model-card.md lists
its sections.

The test metrics' 95% intervals are percentile bootstrap intervals over the test rows (resampled with
replacement, `RESAMPLES` times, seeded): they say how much the numbers would move on another test
split of the same size, which a single figure hides.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

import numpy as np
from scipy.stats import rankdata

from churnflow.core.threshold import churn_flags

RESAMPLES = 1000
"""Bootstrap resamples of the test rows for the 95% intervals (on test splits up to FULL_RESAMPLE_ROWS)."""
FULL_RESAMPLE_ROWS = 20_000
MIN_RESAMPLES = 200


def resamples_for(rows: int) -> int:
    """Fewer resamples on a large test split (cost grows with rows × resamples: about 10 s for 1,000
    resamples of 20,000 rows here), never under MIN_RESAMPLES; a large split's intervals are narrow, so
    their percentiles need fewer draws to be read to the printed precision."""
    if rows <= FULL_RESAMPLE_ROWS:
        return RESAMPLES
    return max(MIN_RESAMPLES, RESAMPLES * FULL_RESAMPLE_ROWS // rows)


BOOTSTRAP_SEED = 20240
INTERVAL_METRICS = ("roc_auc", "pr_auc", "brier", "f1", "precision", "recall", "lift_top_decile")
METRIC_LABELS = {
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC (average precision)",
    "brier": "Brier score (lower is better)",
    "f1": "F1 at the threshold",
    "precision": "precision at the threshold",
    "recall": "recall at the threshold",
    "lift_top_decile": "lift in the top decile",
}
SECTIONS = (
    ("data", "Data"),
    ("candidates", "Candidates"),
    ("rule", "Why this model"),
    ("metrics", "Test metrics"),
    ("threshold", "Threshold and calibration"),
    ("charts", "Charts"),
    ("importance", "Global feature importance"),
    ("gate", "Gate and decision"),
)
"""(id, heading) of every section, in page order: the browser test checks each one renders."""


# -- metrics -------------------------------------------------------------------------------------


def top_decile_lift(target: np.ndarray, probability: np.ndarray) -> float:
    """Churn rate among the 10% highest-scored customers over the base churn rate (1 = no better than random)."""
    count = max(1, math.ceil(len(target) / 10))
    top = np.argsort(-probability, kind="stable")[:count]
    base = float(np.mean(target))
    return float(np.mean(target[top]) / base) if base > 0 else float("nan")


def _batch_metrics(target: np.ndarray, probability: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """Every interval metric for a batch of resamples at once (rows: resamples; columns: test rows).

    Vectorised so a thousand resamples take well under a second: ROC-AUC from tie-averaged ranks
    (Mann-Whitney), average precision as the mean precision at each churner's rank."""
    positives = target.sum(axis=1)
    negatives = target.shape[1] - positives
    with np.errstate(invalid="ignore", divide="ignore"):
        ranks = rankdata(probability, axis=1)
        roc_auc = ((ranks * target).sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)
        order = np.argsort(-probability, axis=1, kind="stable")
        hits = np.take_along_axis(target, order, axis=1)
        precision_at = np.cumsum(hits, axis=1) / np.arange(1, target.shape[1] + 1)
        pr_auc = (precision_at * hits).sum(axis=1) / positives
        predicted = churn_flags(probability, threshold)
        true_positive = (predicted & (target == 1)).sum(axis=1)
        flagged = predicted.sum(axis=1)
        precision = np.where(flagged > 0, true_positive / flagged, 0.0)
        recall = true_positive / positives
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        count = max(1, math.ceil(target.shape[1] / 10))
        lift = hits[:, :count].mean(axis=1) / target.mean(axis=1)
    brier = ((probability - target) ** 2).mean(axis=1)
    return {
        "roc_auc": roc_auc,
        "pr_auc": pr_auc,
        "brier": brier,
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "lift_top_decile": lift,
    }


def bootstrap_intervals(
    target: np.ndarray,
    probability: np.ndarray,
    threshold: float,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, list[float]]:
    """95% percentile-bootstrap interval [low, high] of each interval metric over the test rows.

    A resample without a churner (or without a retained customer) has no AUC; it is left out."""
    target = np.asarray(target, dtype="int64")
    probability = np.asarray(probability, dtype="float64")
    rng = np.random.default_rng(seed)
    values: dict[str, list[np.ndarray]] = {name: [] for name in INTERVAL_METRICS}
    batch = max(1, min(resamples, 4_000_000 // max(1, len(target))))  # bounded memory on large test splits
    done = 0
    while done < resamples:
        size = min(batch, resamples - done)
        rows = rng.integers(0, len(target), size=(size, len(target)))
        for name, batch_values in _batch_metrics(target[rows], probability[rows], threshold).items():
            values[name].append(batch_values)
        done += size
    intervals = {}
    for name, parts in values.items():
        finite = np.concatenate(parts)
        finite = finite[np.isfinite(finite)]
        intervals[name] = [float(v) for v in np.percentile(finite, [2.5, 97.5])] if finite.size else [float("nan")] * 2
    return intervals


def gains_curve(target: np.ndarray, probability: np.ndarray, points: int = 51) -> dict[str, list[float]]:
    """Cumulative gains: the share of all churners found when contacting the top x of customers by score."""
    order = np.argsort(-probability, kind="stable")
    found = np.concatenate([[0.0], np.cumsum(target[order]) / max(1, target.sum())])
    share = np.arange(len(found)) / len(target)
    keep = np.unique(np.linspace(0, len(found) - 1, min(points, len(found))).round().astype(int))
    return {"contacted": share[keep].tolist(), "churners_found": found[keep].tolist()}


# -- charts --------------------------------------------------------------------------------------


def _png_data_uri(draw: Any) -> str:
    """Runs `draw(axes)` on a small figure and returns it as an inline PNG (data: URI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.2, 3.8), dpi=90)
    draw(axes)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def charts(metrics: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(id, caption, data URI) of the reliability, ROC, PR and cumulative-gains charts."""
    base_rate = metrics["positive_rate"]

    def reliability(axes: Any) -> None:
        curve = metrics["calibration_curve"]
        axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
        axes.plot(curve["mean_predicted"], curve["observed_rate"], marker="o", label="model")
        axes.set(xlabel="predicted churn probability", ylabel="observed churn rate", xlim=(0, 1), ylim=(0, 1))
        axes.legend(loc="upper left")

    def roc(axes: Any) -> None:
        curve = metrics["roc_curve"]
        axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
        axes.plot(curve["fpr"], curve["tpr"], label=f"model (AUC {metrics['roc_auc']:.3f})")
        axes.set(xlabel="false-positive rate", ylabel="true-positive rate (recall)", xlim=(0, 1), ylim=(0, 1))
        axes.legend(loc="lower right")

    def pr(axes: Any) -> None:
        curve = metrics["pr_curve"]
        axes.axhline(base_rate, linestyle="--", color="grey", label=f"base rate {base_rate:.3f}")
        axes.plot(curve["recall"], curve["precision"], label=f"model (AP {metrics['pr_auc']:.3f})")
        axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        axes.legend(loc="upper right")

    def gains(axes: Any) -> None:
        curve = metrics["gains_curve"]
        axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
        axes.plot(curve["contacted"], curve["churners_found"], label="model")
        axes.set(xlabel="share of customers contacted (highest scores first)", ylabel="share of churners found")
        axes.set(xlim=(0, 1), ylim=(0, 1.02))
        axes.legend(loc="lower right")

    return [
        ("chart-reliability", "Reliability on the test split", _png_data_uri(reliability)),
        ("chart-roc", "ROC curve", _png_data_uri(roc)),
        ("chart-pr", "Precision-recall curve", _png_data_uri(pr)),
        ("chart-gains", "Cumulative gains", _png_data_uri(gains)),
    ]


# -- text ----------------------------------------------------------------------------------------


def candidate_settings(params: dict[str, Any], varying: set[str]) -> str:
    """The settings that tell a candidate apart from its family's others (all of them if none vary)."""
    keys = [k for k in params if k in varying] or [k for k in params if k not in ("family", "random_state")]
    return ", ".join(f"{k}={params[k]}" for k in keys)


def candidate_rows(tuning: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every candidate with its settings, mean, spread and its paired difference from the chosen one."""
    if not tuning:
        return []
    results = tuning["candidates"]
    chosen = tuning["best"]
    chosen_result = next((r for r in results if r["params"] == chosen), None)
    varying: dict[str, set[str]] = {}  # per family: the settings its candidates differ in
    for r in results:
        for other in results:
            if other["params"]["family"] == r["params"]["family"]:
                differ = {k for k in r["params"] if r["params"][k] != other["params"].get(k)}
                varying.setdefault(r["params"]["family"], set()).update(differ)
    rows = []
    for result in results:
        paired = None
        if chosen_result is not None and len(result.get("fold_scores", [])) == len(chosen_result["fold_scores"]):
            differences = np.subtract(result["fold_scores"], chosen_result["fold_scores"])
            paired = float(np.mean(differences))
        rows.append(
            {
                "family": result["params"]["family"],
                "settings": candidate_settings(result["params"], varying[result["params"]["family"]]),
                "score": result["score"],
                "std": result.get("std", 0.0),
                "folds": len(result.get("fold_scores", [])),
                "paired_difference": paired,
                "versus_highest": result.get("paired_difference"),
                "versus_highest_error": result.get("paired_standard_error"),
                "chosen": result["params"] == chosen,
                "highest": result["params"] == tuning["highest_params"],
            }
        )
    return rows


def _repeats(tuning: dict[str, Any]) -> str:
    chosen = [c for c in tuning["candidates"] if c["params"] == tuning["best"]]
    first = (chosen or tuning["candidates"])[0]  # screened-out candidates have fewer folds than the chosen
    repeats, folds = int(first.get("repeats") or 1), int(first.get("folds") or len(first.get("fold_scores", [])))
    return f"{repeats} × {folds}-fold stratified CV" if repeats > 1 else f"{folds}-fold stratified CV"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def why_chosen(tuning: dict[str, Any] | None, family: str) -> str:
    """One or two sentences: the rule, and how the chosen model stood against the highest score."""
    if not tuning:
        return f"Tuning was off: the {family} was trained with the base settings, no choice was made."
    metric = tuning["metric"]
    text = f"Rule: {tuning['rule']}. "
    if tuning["best"] == tuning["highest_params"]:
        text += f"The chosen {family} had the highest mean {metric} ({tuning['best_score']:.4f}) itself."
    else:
        text += (
            f"The chosen {family} scored {tuning['best_score']:.4f} against the highest {tuning['highest_score']:.4f} "
            f"({tuning['highest_params']['family']}); the difference is within the tolerance "
            f"{tuning['tolerance']:.4f}, so the simpler candidate listed earlier was kept."
        )
    return text


def describe_threshold(threshold: dict[str, Any], value: float) -> str:
    """How the threshold was chosen, from train's threshold report (out-of-fold figures on the training split)."""
    goal = threshold.get("goal", "")
    if goal in ("", None) or goal == value:
        return f"Threshold {value:.3f}, fixed."
    figures = ", ".join(
        f"{k.removesuffix('_oof')} {v:.3f}" for k, v in threshold.items() if k.endswith("_oof") and isinstance(v, float)
    )
    return (
        f"Threshold {value:.3f}, chosen for the goal {goal!s} on the out-of-fold predictions of the training "
        f"split" + (f" (there: {figures})" if figures else "") + "."
    )


def describe_calibration(calibration: dict[str, Any]) -> str:
    """The calibration method kept and the out-of-fold Brier scores it was chosen by."""
    briers = ", ".join(
        f"{k.removesuffix('_brier_oof')} {v:.4f}" for k, v in calibration.items() if k.endswith("_brier_oof")
    )
    text = f"Calibration: {calibration.get('method', 'none')} (asked for {calibration.get('mode', 'none')})"
    return text + (f"; out-of-fold Brier by method: {briers} (the lowest is kept)." if briers else ".")


def render_html(report: dict[str, Any], metadata: dict[str, Any]) -> str:
    """The card as one HTML document: `report` is evaluate's result, `metadata` the model's metadata.json."""
    metrics = report["metrics"]
    data = metadata.get("data", {})
    tuning = metadata.get("tuning")
    family = metadata.get("family", "model")
    e = html.escape
    parts: list[str] = []

    filled = data.get("filled_blanks", {})
    blank_rows = [[e(c), str(v["blanks"]), _fmt(float(v["value"]))] for c, v in filled.items() if v["blanks"]]
    blanks = (
        _table(["column", "blank cells filled", "value used (training median)"], blank_rows)
        if blank_rows
        else "<p>No blank cells were filled.</p>"
    )
    parts.append(
        f"<p>Source {e(str(data.get('source', '?')))}: {data.get('rows', '?')} rows "
        f"({data.get('train_rows', '?')} training, {data.get('test_rows', '?')} test); "
        f"base churn rate {_fmt(data.get('positive_rate'), 3)}.</p>{blanks}"
    )

    rows = candidate_rows(tuning)
    if rows:
        metric = tuning["metric"]
        table_rows = [
            [
                ("<strong>chosen</strong> " if r["chosen"] else "")
                + ("<em>highest</em> " if r["highest"] else "")
                + e(r["family"]),
                e(r["settings"]),
                _fmt(r["score"]),
                _fmt(r["std"]),
                str(r["folds"]),
                _fmt(r["paired_difference"]),
                _fmt(r["versus_highest"]) + " ± " + _fmt(r["versus_highest_error"]),
            ]
            for r in rows
        ]
        parts.append(
            _table(
                [
                    "family",
                    "settings",
                    f"mean {metric}",
                    "spread (sd over folds)",
                    "folds",
                    "paired difference from the chosen",
                    "paired difference from the highest ± its standard error",
                ],
                table_rows,
            )
            + "<p>Paired difference: the mean of the candidate's fold-by-fold score differences, on the same "
            f"folds ({max(r['folds'] for r in rows)} = {_repeats(tuning)}). The standard error is Nadeau and "
            "Bengio's corrected one for cross-validation, sd(d)·√(1/J + n_test/n_train), since folds share "
            "training rows."
            + (
                " Candidates with fewer folds were more than one standard error behind the highest after the "
                "first k folds, or listed after the two earliest within it: only the others were repeated, "
                "and their differences on those first folds are shown."
                if len({r["folds"] for r in rows}) > 1
                else ""
            )
            + "</p>"
        )
    else:
        parts.append(f"<p>One candidate: {e(family)} with {e(str(metadata.get('hyperparameters', {})))}.</p>")

    parts.append(f"<p>{e(why_chosen(tuning, family))}</p>")

    interval = report.get("intervals", {})
    metric_rows = [
        [
            e(METRIC_LABELS[name]),
            _fmt(metrics.get(name)),
            _fmt(interval.get(name, [None, None])[0]) + " – " + _fmt(interval.get(name, [None, None])[1]),
        ]
        for name in INTERVAL_METRICS
    ]
    parts.append(
        _table(["metric", "value", "95% interval"], metric_rows)
        + f"<p>{metrics['rows']} test rows. Intervals: percentile bootstrap over the test rows, "
        f"{report.get('resamples', RESAMPLES)} resamples, seeded.</p>"
    )

    calibration = metadata.get("calibration", {})
    parts.append(
        f"<p>{e(describe_threshold(metadata.get('threshold', {}), metrics['threshold']))} A customer is "
        f"flagged as churning when the calibrated probability is above it.</p>"
        f"<p>{e(describe_calibration(calibration))} On the test split: Brier {metrics['brier']:.4f}, before "
        f"calibration {_fmt(metrics.get('brier_uncalibrated'))}.</p>"
    )

    figures = "".join(
        f'<figure><img id="{chart_id}" alt="{e(caption)}" src="{uri}"><figcaption>{e(caption)}</figcaption></figure>'
        for chart_id, caption, uri in charts(metrics)
    )
    parts.append(f'<div class="charts">{figures}</div>')

    importance = report.get("importance", [])
    top = max((v for _, v in importance), default=0.0) or 1.0
    importance_rows = [
        [e(name), f"{value:.4f}", f'<span class="bar" style="width:{200 * value / top:.0f}px"></span>']
        for name, value in importance
    ]
    parts.append(
        _table(["column", "mean |contribution|", ""], importance_rows)
        + "<p>Mean absolute contribution to the (uncalibrated) churn probability over the test rows, from "
        "the decision-path decomposition the predictor's :explain uses; one-hot levels summed per column.</p>"
    )

    gate = report["gate"]
    floors = [
        ["ROC-AUC at least", _fmt(gate["min_roc_auc"]), _fmt(metrics["roc_auc"])],
        ["F1 at least", _fmt(gate["min_f1"]), _fmt(metrics["f1"])],
        ["precision at least", _fmt(gate["min_precision"]), _fmt(metrics["precision"])],
        ["Brier at most", _fmt(gate["max_brier"]), _fmt(metrics["brier"])],
    ]
    champion = report.get("champion")
    compare = gate["compare_metric"]
    if champion and compare in champion:
        versus = (
            f"Champion: the production model's {compare} is {float(champion[compare]):.4f}; the candidate may "
            f"fall at most {gate['max_regression']:.4f} below it and has {metrics[compare]:.4f}."
        )
    else:
        versus = "Champion: no model was in production, so there was nothing to compare against."
    verdict = "Deploy." if report["deploy"] else "Do not deploy: " + "; ".join(report["reasons"]) + "."
    parts.append(
        _table(["floor", "required", "this model"], floors)
        + f'<p>{e(versus)}</p><p class="verdict"><strong>Decision: {e(verdict)}</strong></p>'
    )

    body = "".join(
        f'<section id="{section_id}"><h2>{heading}</h2>{content}</section>'
        for (section_id, heading), content in zip(SECTIONS, parts, strict=True)
    )
    title = f"Model card: {family} {metadata.get('model_version', '')}".strip()
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{e(title)}</h1><p>{e(summary_line(report, metadata))}</p>{body}</body></html>\n"
    )


_STYLE = (
    "body{font-family:sans-serif;max-width:60rem;margin:1rem auto;padding:0 1rem;color:#222}"
    "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}"
    ".charts{display:flex;flex-wrap:wrap;gap:.5rem}figure{margin:0}"
    ".bar{display:inline-block;height:.8rem;background:#4a7ebb}.verdict{font-size:1.1rem}"
)


def summary_line(report: dict[str, Any], metadata: dict[str, Any]) -> str:
    """The one line a run prints: the chosen model, its threshold and the decision."""
    metrics = report["metrics"]
    params = metadata.get("hyperparameters", {})
    settings = ", ".join(f"{k}={v}" for k, v in params.items() if k not in ("family", "random_state"))
    verdict = "deploy" if report["deploy"] else "do not deploy"
    return (
        f"chose {metadata.get('family', 'model')} ({settings}), threshold {metrics['threshold']:.3f}; "
        f"test ROC-AUC {metrics['roc_auc']:.4f}, PR-AUC {metrics.get('pr_auc', float('nan')):.4f} → {verdict}"
    )


def render_markdown(report: dict[str, Any], metadata: dict[str, Any]) -> str:
    """The short summary the KFP UI shows beside the card (a Markdown artifact)."""
    metrics = report["metrics"]
    interval = report.get("intervals", {})
    lines = [f"### Model card summary: {metadata.get('family', 'model')} {metadata.get('model_version', '')}", ""]
    lines.append(summary_line(report, metadata))
    lines += ["", "| metric | value | 95% interval |", "|---|---|---|"]
    for name in INTERVAL_METRICS:
        low, high = interval.get(name, [float("nan")] * 2)
        lines.append(f"| {METRIC_LABELS[name]} | {_fmt(metrics.get(name))} | {_fmt(low)} – {_fmt(high)} |")
    tuning = metadata.get("tuning")
    lines += ["", why_chosen(tuning, metadata.get("family", "model"))]
    if not report["deploy"]:
        lines += ["", "Refused: " + "; ".join(report["reasons"])]
    return "\n".join(lines) + "\n"
