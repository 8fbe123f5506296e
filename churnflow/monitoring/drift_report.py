"""Writing a drift check's results: JSON for machines, HTML for people, Prometheus text for alerts.

    drift.json   the whole report (churnflow.monitoring.drift.check)
    drift.html   one self-contained page: the verdict, a table per check, and for every feature a
                 bar chart (inline SVG) of its training vs live bin fractions
    drift.prom   the results as gauges in the Prometheus text format (node-exporter textfile
                 collector format; also what a pushgateway accepts), written atomically

The gauges carry the names the predictor declares and the alert rules read
(churnflow_feature_drift_psi, churnflow_precision_drop_ratio, ...), so shipping drift.prom with a
textfile collector or `curl --data-binary @drift.prom` to a pushgateway puts them beside the
serving metrics.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from churnflow.core.errors import ChurnflowError
from churnflow.monitoring.drift import DRIFT, OK, WATCH, judge

JSON_FILE, HTML_FILE, PROM_FILE = "drift.json", "drift.html", "drift.prom"
STATUS_VALUE = {OK: 0, WATCH: 1, DRIFT: 2}

# name → (help, extra labels); every one also has model_name and model_version
GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "churnflow_feature_drift_psi": ("PSI of a feature's live distribution against training.", ("feature",)),
    "churnflow_feature_drift_p_value": (
        "p-value of the feature's drift test (ks for numeric, chi-square for categorical).",
        ("feature", "test"),
    ),
    "churnflow_feature_drift_status": ("Feature drift status: 0 ok, 1 watch, 2 drift.", ("feature",)),
    "churnflow_prediction_drift_psi": ("PSI of served probabilities against the evaluation's.", ()),
    "churnflow_live_precision": ("Precision of logged predictions that have ground truth.", ()),
    "churnflow_live_recall": ("Recall of logged predictions that have ground truth.", ()),
    "churnflow_live_roc_auc": ("ROC-AUC of logged predictions that have ground truth.", ()),
    "churnflow_precision_drop_ratio": (
        "Relative drop of live precision below the deployed model's evaluation precision (0.1 = 10% lower).",
        (),
    ),
    "churnflow_drift_labelled_predictions": ("Predictions in the window with ground truth.", ()),
    "churnflow_drift_window_predictions": ("Predictions in the drift check's window.", ()),
    "churnflow_drift_detected": ("1 when the last drift check found drift (data, prediction or accuracy).", ()),
    "churnflow_drift_check_timestamp_seconds": ("When the last drift check ran (Unix time).", ()),
}


def write_report(report: dict[str, Any], directory: str | Path) -> dict[str, Path]:
    """Writes drift.json, drift.html and drift.prom into `directory`; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / JSON_FILE, "html": directory / HTML_FILE, "prom": directory / PROM_FILE}
    paths["json"].write_text(json.dumps(report, indent=2, default=str) + "\n")
    paths["html"].write_text(render_html(report))
    write_to_textfile(str(paths["prom"]), prometheus_registry(report))
    return paths


def prometheus_registry(report: dict[str, Any], now: float | None = None) -> CollectorRegistry:
    """The report's numbers as gauges in a registry of their own."""
    registry = CollectorRegistry()
    gauges = {
        name: Gauge(name, help_text, ["model_name", "model_version", *labels], registry=registry)
        for name, (help_text, labels) in GAUGES.items()
    }
    model = (report.get("model_name", "churn"), report.get("model_version") or "")
    for feature, result in report["data_drift"].get("features", {}).items():
        gauges["churnflow_feature_drift_psi"].labels(*model, feature).set(result["psi"])
        gauges["churnflow_feature_drift_status"].labels(*model, feature).set(STATUS_VALUE.get(result["status"], 0))
        if result.get("p_value") is not None:
            gauges["churnflow_feature_drift_p_value"].labels(*model, feature, result["test"]).set(result["p_value"])
    prediction = report["prediction_drift"]
    if prediction.get("psi") is not None:
        gauges["churnflow_prediction_drift_psi"].labels(*model).set(prediction["psi"])
    accuracy = report["accuracy"]
    for name in ("precision", "recall", "roc_auc"):
        value = accuracy.get("live", {}).get(name)
        if value is not None:
            gauges[f"churnflow_live_{name}"].labels(*model).set(value)
    if accuracy.get("precision_drop") is not None:
        gauges["churnflow_precision_drop_ratio"].labels(*model).set(accuracy["precision_drop"])
    gauges["churnflow_drift_labelled_predictions"].labels(*model).set(accuracy["labelled"])
    gauges["churnflow_drift_window_predictions"].labels(*model).set(report["window"]["rows"])
    gauges["churnflow_drift_detected"].labels(*model).set(1 if report["drift"] else 0)
    gauges["churnflow_drift_check_timestamp_seconds"].labels(*model).set(time.time() if now is None else now)
    return registry


PUSH_JOB = "churnflow-drift"


def push_report(report: dict[str, Any], gateway: str, *, namespace: str = "", timeout: float = 10.0) -> dict[str, str]:
    """Pushes the report's gauges to a Prometheus Pushgateway; returns the grouping key.

    The group is job="churnflow-drift" plus the model name (and the namespace when given), not the
    model version: each check replaces the previous check's numbers, so when a retrained version takes
    over, the retired version's precision drop does not linger and keep its alert firing. The version
    is a label on every series. Prometheus scrapes the Pushgateway with honor_labels, keeping these.
    """
    grouping = {"model_name": str(report.get("model_name", "churn"))}
    if namespace:
        grouping["namespace"] = namespace
    try:
        push_to_gateway(
            gateway, job=PUSH_JOB, registry=prometheus_registry(report), grouping_key=grouping, timeout=timeout
        )
    except OSError as error:  # urllib's URLError/HTTPError: unreachable, refused, or a 4xx/5xx answer
        raise ChurnflowError(f"pushgateway {gateway}: the drift results were not pushed ({error})") from None
    return grouping


# -- HTML ---------------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}
.ok{color:#1a7f37}.watch{color:#9a6700}.drift{color:#cf222e;font-weight:bold}.muted{color:#666}
.verdict{padding:.6rem 1rem;border-radius:.3rem;display:inline-block}
.verdict.drift{background:#ffebe9}.verdict.ok{background:#dafbe1}
figure{display:inline-block;margin:.5rem 1rem .5rem 0}figcaption{font-size:.9rem}
"""
_REFERENCE_COLOUR, _LIVE_COLOUR = "#8c959f", "#0969da"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value else f"{value:.{digits}f}"
    return _e(value)


def bar_chart(title: str, bins: list[str], reference: list[float], live: list[float]) -> str:
    """Grouped bars (training grey, live blue) per bin, as inline SVG."""
    width_per_bin, height, top, bottom, left = 44, 150, 20, 60, 36
    width = left + width_per_bin * len(bins) + 10
    peak = max([*reference, *live, 0.01])
    scale = (height - top - bottom) / peak
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{_e(title)}">',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 5}" y2="{height - bottom}" stroke="#999"/>',
        f'<text x="2" y="{top + 4}" font-size="10">{peak:.2f}</text>',
    ]
    for i, name in enumerate(bins):
        x = left + i * width_per_bin + 4
        for j, (value, colour) in enumerate(((reference[i], _REFERENCE_COLOUR), (live[i], _LIVE_COLOUR))):
            bar = max(0.0, value) * scale
            parts.append(
                f'<rect x="{x + j * 17}" y="{height - bottom - bar:.1f}" width="16" height="{bar:.1f}" '
                f'fill="{colour}"><title>{_e(name)}: {"training" if j == 0 else "live"} {value:.3f}</title></rect>'
            )
        label_y = height - bottom + 12
        parts.append(
            f'<text x="{x + 16}" y="{label_y}" font-size="9" text-anchor="end" '
            f'transform="rotate(-40 {x + 16} {label_y})">{_e(name[:18])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: dict[str, Any]) -> str:
    verdict_class = DRIFT if report["drift"] else OK
    verdict = judge(report).headline()  # the verdict the terminal shows, and the KFP drift check acts on
    verdict = "Drift: " + "; ".join(report["reasons"]) if report["drift"] else verdict[:1].upper() + verdict[1:]
    window = report["window"]
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Drift check: {_e(report.get('model_name'))} {_e(report.get('model_version'))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Drift check: model {_e(report.get('model_name'))} version {_e(report.get('model_version'))}</h1>",
        f"<p class='verdict {verdict_class}'>{_e(verdict)}</p>",
        f"<p>Checked {_e(report.get('checked_at'))} on {_e(window['rows'])} predictions "
        f"({_e(window.get('first'))} to {_e(window.get('last'))}) from {_e(report.get('store'))}; "
        f"{_e(report['accuracy']['labelled'])} have ground truth.</p>",
    ]
    out += [f"<p class='muted'>Note: {_e(note)}</p>" for note in report["notes"]]
    t = report["thresholds"]
    out.append(
        f"<p class='muted'>Thresholds: PSI {t['psi_watch']} watch, {t['psi_act']} act; tests at p &lt; "
        f"{t['alpha']} / features (Bonferroni); precision drop &gt; {t['precision_drop']:.0%}.</p>"
    )
    out.append(_feature_section(report["data_drift"]))
    out.append(_prediction_section(report["prediction_drift"]))
    out.append(_accuracy_section(report["accuracy"]))
    out.append("</body></html>\n")
    return "\n".join(out)


def _status(status: str) -> str:
    return f"<span class='{_e(status.split()[0])}'>{_e(status)}</span>"


def _feature_section(data: dict[str, Any]) -> str:
    features = data.get("features", {})
    out = ["<h2>Data drift (inputs vs training)</h2>"]
    if not features:
        return out[0] + f"<p>{_status(data['status'])}</p>"
    out.append("<table><tr><th>feature</th><th>kind</th><th>PSI</th><th>test</th><th>statistic</th>")
    out.append(f"<th>p-value (drift below {_number(data.get('p_threshold'))})</th><th>status</th></tr>")
    for name, r in features.items():
        out.append(
            f"<tr><td>{_e(name)}</td><td>{_e(r['kind'])}</td><td>{_number(r['psi'])}</td><td>{_e(r['test'] or '—')}"
            f"</td><td>{_number(r['statistic'])}</td><td>{_number(r['p_value'])}</td><td>{_status(r['status'])}</td></tr>"
        )
    out.append("</table><p class='muted'>Bars: training (grey) and live (blue) fraction per bin.</p>")
    for name, r in features.items():
        chart = bar_chart(name, r["bins"], r["reference_fractions"], r["live_fractions"])
        out.append(f"<figure>{chart}<figcaption>{_e(name)}: PSI {_number(r['psi'])} {_status(r['status'])}")
        out.append("</figcaption></figure>")
    return "\n".join(out)


def _prediction_section(prediction: dict[str, Any]) -> str:
    out = ["<h2>Prediction drift (served probabilities vs evaluation)</h2>"]
    if "psi" not in prediction:
        out.append(f"<p>{_status(prediction['status'])} {_e(prediction.get('note', ''))}</p>")
        return "\n".join(out)
    out.append(
        f"<p>PSI {_number(prediction['psi'])}, KS p-value {_number(prediction.get('p_value'))}: "
        f"{_status(prediction['status'])}</p>"
    )
    bins, reference, live = prediction["bins"], prediction["reference_fractions"], prediction["live_fractions"]
    chart = bar_chart("probability", bins, reference, live)
    out.append(f"<figure>{chart}<figcaption>churn probability</figcaption></figure>")
    return "\n".join(out)


def _accuracy_section(accuracy: dict[str, Any]) -> str:
    out = ["<h2>Accuracy (predictions with ground truth vs evaluation)</h2>"]
    out.append(f"<p>{_status(accuracy['status'])} {_e(accuracy.get('note', ''))}</p>")
    live, reference = accuracy.get("live", {}), accuracy.get("reference", {})
    out.append("<table><tr><th>metric</th><th>evaluation</th><th>live</th></tr>")
    for name in ("precision", "recall", "roc_auc"):
        out.append(f"<tr><td>{name}</td><td>{_number(reference.get(name))}</td><td>{_number(live.get(name))}</td></tr>")
    out.append("</table>")
    if accuracy.get("precision_drop") is not None:
        out.append(f"<p>Relative precision drop: {accuracy['precision_drop']:.1%}</p>")
    return "\n".join(out)
