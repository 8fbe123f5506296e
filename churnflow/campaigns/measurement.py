"""`churnflow campaign-report`: what a campaign really did, measured against its randomized control group.

The plan (churnflow/campaigns/plan.py) keeps a seeded random share of the chosen list uncontacted. Once the
outcomes are known, the control group's churn rate is what the contacted customers would have done
without the campaign, so the campaign's effect is

    churn_rate_reduction = churn rate of the control − churn rate of the contacted.

Its 95% interval is Newcombe's hybrid score interval for a difference of two independent proportions
(Newcombe 1998, "Interval estimation for the difference between independent proportions", method 10:
each rate's Wilson score interval, combined). It behaves well for small groups and rates near 0 or 1,
where the Wald interval (rate ± 1.96 × standard error) is too narrow.

Customers saved = reduction × contacted customers with a known outcome; the net saving uses the plan's
own figures: each saved customer is worth their value (value_at_risk / probability, as `score` wrote it)
minus the offer, which only saved customers are paid, and every contact costs contact_cost. Both are
linear in the reduction, so their intervals are the reduction's interval scaled the same way.
Customers missing from the outcomes are counted and reported per group; they take no part in the rates.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from churnflow.core.errors import ChurnflowError

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
METHOD = "Newcombe hybrid score interval (method 10, 1998) for the difference of two independent proportions"
DECILES = 10


def wilson(churned: int, customers: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of one proportion (used by Newcombe's method for each arm)."""
    if customers == 0:
        return (0.0, 1.0)
    rate = churned / customers
    denominator = 1 + z * z / customers
    centre = (rate + z * z / (2 * customers)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / customers + z * z / (4 * customers * customers)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe(churned_a: int, customers_a: int, churned_b: int, customers_b: int) -> tuple[float, float]:
    """95% interval of rate_a − rate_b (Newcombe's hybrid score method)."""
    rate_a, rate_b = churned_a / customers_a, churned_b / customers_b
    low_a, high_a = wilson(churned_a, customers_a)
    low_b, high_b = wilson(churned_b, customers_b)
    difference = rate_a - rate_b
    return (
        difference - math.sqrt((rate_a - low_a) ** 2 + (high_b - rate_b) ** 2),
        difference + math.sqrt((high_a - rate_a) ** 2 + (rate_b - low_b) ** 2),
    )


@dataclass
class PlanOnDisk:
    """What campaign-report needs from a plan directory (call_list.csv and plan.json)."""

    id_column: str
    ids: list[str]
    control: np.ndarray
    probability: np.ndarray
    value_at_risk: np.ndarray
    summary: dict[str, Any]


def read_plan(plan_uri: str) -> PlanOnDisk:
    """The call list and plan.json from a plan directory (a path or any URI the storage layer reads)."""
    import pyarrow.csv as pacsv

    from churnflow.core.storage import open_object

    base = plan_uri.rstrip("/")
    files = {}
    for name in ("plan.json", "call_list.csv"):
        try:
            with open_object(f"{base}/{name}") as handle:
                files[name] = handle.read()
        except ChurnflowError as error:
            raise ChurnflowError(
                f"--plan {plan_uri}: no readable {name} (the output of churnflow plan?): {error}"
            ) from None
    try:
        summary = json.loads(files["plan.json"])
        header = files["call_list.csv"].split(b"\n", 1)[0].decode().strip().strip('"')
        id_column = summary.get("id_column") or header.split('","')[0].split(",")[0]
        # ids stay text: "00123" and "123" are different customers
        types = pacsv.ConvertOptions(column_types={id_column: pa.string()})
        head = pacsv.read_csv(pa.BufferReader(files["call_list.csv"]), convert_options=types)
    except (ValueError, pa.ArrowInvalid) as error:
        raise ChurnflowError(f"--plan {plan_uri}: cannot read the plan ({str(error).splitlines()[0]})") from None
    for column in ("group", "probability", "value_at_risk"):
        if column not in head.schema.names:
            raise ChurnflowError(
                f"--plan {plan_uri}: call_list.csv has no {column!r} column (written by churnflow plan?)"
            )
    if id_column not in head.schema.names:
        raise ChurnflowError(f"--plan {plan_uri}: call_list.csv has no id column {id_column!r}")
    groups = head.column("group").to_pylist()
    unknown = sorted({g for g in groups} - {"contact", "control"})
    if unknown:
        raise ChurnflowError(f"--plan {plan_uri}: call_list.csv group: expected contact or control, got {unknown[0]!r}")
    return PlanOnDisk(
        id_column=id_column,
        ids=[str(v) for v in head.column(id_column).to_pylist()],
        control=np.array([g == "control" for g in groups], dtype=bool),
        probability=head.column("probability").to_numpy().astype(np.float64),
        value_at_risk=head.column("value_at_risk").to_numpy().astype(np.float64),
        summary=summary,
    )


def read_outcomes(uri: str, id_column: str, fmt: str | None = None) -> dict[str, int]:
    """id → churned (0/1), through the same storage layer as `churnflow score`."""
    from churnflow.scoring.bulk import open_table

    dataset, _ = open_table(uri, [id_column, "churned"], 1 << 16, fmt)
    table = dataset.to_table(columns=[id_column, "churned"])
    ids = pc.cast(table.column(id_column), pa.string()).to_pylist()
    raw = table.column("churned")
    values = pc.cast(raw, pa.string()).to_pylist() if not pa.types.is_string(raw.type) else raw.to_pylist()
    outcomes: dict[str, int] = {}
    for row, (key, value) in enumerate(zip(ids, values, strict=True), start=1):
        text = "" if value is None else str(value).strip().lower()
        churned = {"0": 0, "1": 1, "true": 1, "false": 0, "0.0": 0, "1.0": 1}.get(text)
        if churned is None:
            raise ChurnflowError(f"outcomes {uri}: row {row}: churned: expected 0 or 1, got {value!r}")
        if key is None or key == "":
            raise ChurnflowError(f"outcomes {uri}: row {row}: {id_column}: expected a customer id, got a blank")
        if outcomes.get(key, churned) != churned:
            raise ChurnflowError(f"outcomes {uri}: {id_column} {key!r} appears twice with different churned values")
        outcomes[key] = churned
    return outcomes


def _arm(churned: np.ndarray) -> dict[str, Any]:
    customers, count = int(len(churned)), int(churned.sum())
    return {
        "customers": customers,
        "churned": count,
        "churn_rate": count / customers if customers else None,
        "churn_rate_ci95": list(wilson(count, customers)) if customers else None,
    }


def _effect(contacted: np.ndarray, control: np.ndarray, value_per_saved: float, contact_cost: float) -> dict[str, Any]:
    """Reduction, customers saved and net saving, each with its 95% interval (None when an arm is empty)."""
    n = len(contacted)
    if n == 0 or len(control) == 0:
        return {"churn_rate_reduction": None, "ci95": None, "customers_saved": None, "net_saving": None}
    reduction = float(control.mean() - contacted.mean())
    interval = newcombe(int(control.sum()), len(control), int(contacted.sum()), n)

    def saved(r: float) -> float:
        return r * n

    def net(r: float) -> float:
        return saved(r) * value_per_saved - n * contact_cost

    return {
        "churn_rate_reduction": reduction,
        "ci95": list(interval),
        "customers_saved": {"estimate": saved(reduction), "ci95": [saved(interval[0]), saved(interval[1])]},
        "net_saving": {"estimate": net(reduction), "ci95": sorted([net(interval[0]), net(interval[1])])},
    }


def measure(plan: PlanOnDisk, outcomes: dict[str, int]) -> dict[str, Any]:
    """report.json's content: both arms, the effect with intervals, the plan's expectation, by decile."""
    parameters = plan.summary.get("parameters", {})
    contact_cost = float(parameters.get("contact_cost", 0.0))
    offer_cost = float(parameters.get("offer_cost", 0.0))
    save_rate = float(parameters.get("save_rate", 0.0))
    known = np.array([key in outcomes for key in plan.ids], dtype=bool)
    churned = np.array([outcomes.get(key, 0) for key in plan.ids], dtype=np.int64)
    contact = ~plan.control
    # each customer's value if kept: value_at_risk = probability × value (churnflow score)
    value = np.divide(plan.value_at_risk, plan.probability, out=np.zeros_like(plan.value_at_risk),
                      where=plan.probability > 0)  # fmt: skip
    measured = contact & known
    mean_value = float(value[measured].mean()) if measured.any() else 0.0
    value_per_saved = mean_value - offer_cost
    report: dict[str, Any] = {
        "method": METHOD,
        "definitions": {
            "churn_rate_reduction": "churn rate of the control group − churn rate of the contacted customers",
            "customers_saved": "churn_rate_reduction × contacted customers with a known outcome",
            "net_saving": "customers_saved × (mean value of a contacted customer − offer_cost) "
            "− contacted customers with a known outcome × contact_cost",
        },
        "id_column": plan.id_column,
        "list_size": len(plan.ids),
        "contacted": {**_arm(churned[measured]), "missing_outcome": int((contact & ~known).sum())},
        "control": {**_arm(churned[plan.control & known]), "missing_outcome": int((plan.control & ~known).sum())},
        "outcomes_not_on_the_list": len(set(outcomes) - set(plan.ids)),
        "mean_value_contacted": mean_value,
        "effect": _effect(churned[measured], churned[plan.control & known], value_per_saved, contact_cost),
    }
    expected_rate = float(plan.probability[contact].mean()) if contact.any() else 0.0
    report["planned"] = {
        "contacted": int(contact.sum()),
        "control": int(plan.control.sum()),
        "churn_rate_without_campaign": expected_rate,
        "churn_rate_reduction": save_rate * expected_rate,
        "customers_saved": save_rate * float(plan.probability[contact].sum()),
        "net_saving": plan.summary.get("expected_net_saving"),
    }
    deciles = []
    for index, rows in enumerate(np.array_split(np.arange(len(plan.ids)), DECILES), start=1):
        if not len(rows):
            continue
        part_contact = measured[rows]
        part_control = (plan.control & known)[rows]
        c, k = churned[rows][part_contact], churned[rows][part_control]
        effect = _effect(c, k, value_per_saved, contact_cost)
        deciles.append(
            {
                "decile": index,
                "ranks": [int(rows[0]) + 1, int(rows[-1]) + 1],
                "mean_probability": float(plan.probability[rows].mean()),
                "contacted": _arm(c),
                "control": _arm(k),
                "churn_rate_reduction": effect["churn_rate_reduction"],
                "ci95": effect["ci95"],
                "planned_reduction": save_rate * float(plan.probability[rows][contact[rows]].mean())
                if contact[rows].any()
                else None,
            }
        )
    report["by_risk_decile"] = deciles
    notes = []
    missing = report["contacted"]["missing_outcome"] + report["control"]["missing_outcome"]
    if missing:
        notes.append(f"{missing} customers on the list have no outcome (left out of the rates, counted above)")
    if report["effect"]["churn_rate_reduction"] is None:
        notes.append("no effect: one of the groups has no customer with a known outcome")
    elif report["control"]["customers"] < 100:
        notes.append(f"only {report['control']['customers']} control customers with outcomes: the interval is wide")
    report["notes"] = notes
    return report


def _money(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _count(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def _points(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:+.2f} pts"


def plot_report(report: dict[str, Any], directory: Path) -> dict[str, Path]:
    """Two charts: churn rate by group with 95% intervals, and the reduction by risk decile against the plan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    percent = FuncFormatter(lambda v, _: f"{100 * v:.0f}%")
    arms_path, deciles_path = directory / "churn_by_group.png", directory / "reduction_by_decile.png"
    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=110)
    for x, name, colour in ((0, "contacted", "#1f77b4"), (1, "control", "#7f7f7f")):
        arm = report[name]
        if arm["churn_rate"] is None:
            continue
        low, high = arm["churn_rate_ci95"]
        axis.bar(x, arm["churn_rate"], color=colour, width=0.6)
        axis.errorbar(x, arm["churn_rate"], yerr=[[arm["churn_rate"] - low], [high - arm["churn_rate"]]],
                      color="black", capsize=8)  # fmt: skip
        axis.annotate(f"{100 * arm['churn_rate']:.1f}% of {arm['customers']:,}", (x, high), ha="center",
                      xytext=(0, 6), textcoords="offset points")  # fmt: skip
    tops = [report[n]["churn_rate_ci95"][1] for n in ("contacted", "control") if report[n]["churn_rate"] is not None]
    axis.set_ylim(0, min(1.0, max(tops, default=1.0) * 1.2 + 0.02))  # room for the labels
    axis.set_xticks([0, 1], ["contacted", "control (not contacted)"])
    axis.yaxis.set_major_formatter(percent)
    axis.set_ylabel("churn rate (95% Wilson interval)")
    axis.set_title("Churn by group")
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(arms_path)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=110)
    rows = [d for d in report["by_risk_decile"] if d["churn_rate_reduction"] is not None]
    if rows:
        x = np.array([d["decile"] for d in rows])
        y = np.array([d["churn_rate_reduction"] for d in rows])
        low = np.array([d["ci95"][0] for d in rows])
        high = np.array([d["ci95"][1] for d in rows])
        axis.errorbar(x, y, yerr=[y - low, high - y], fmt="o", capsize=4, label="measured (95% Newcombe interval)")
    planned = [(d["decile"], d["planned_reduction"]) for d in report["by_risk_decile"] if d["planned_reduction"]]
    if planned:
        axis.plot(*zip(*planned, strict=True), "x--", color="#d62728", label="planned")
    axis.axhline(0, color="grey", linewidth=0.8)
    axis.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:+.0f} pts"))
    axis.set_xlabel("risk decile of the list (1 = highest risk)")
    axis.set_ylabel("churn rate reduction")
    axis.set_title("Reduction by risk decile")
    axis.grid(alpha=0.3)
    axis.legend(loc="best")
    figure.tight_layout()
    figure.savefig(deciles_path)
    plt.close(figure)
    return {"churn_by_group": arms_path, "reduction_by_decile": deciles_path}


def render_html(report: dict[str, Any], charts: dict[str, Path]) -> str:
    """One self-contained page (inline styles, charts as data URIs, no scripts)."""
    effect, planned = report["effect"], report["planned"]
    images = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(Path(path).read_bytes()).decode()}"/>'
        "</figure>"
        for name, path in charts.items()
    )

    def interval(pair: list[float] | None, fmt: Any) -> str:
        return "—" if not pair else f"{fmt(pair[0])} to {fmt(pair[1])}"

    saved, net = effect.get("customers_saved") or {}, effect.get("net_saving") or {}
    rows = [
        ("contacted", report["contacted"]),
        ("control (not contacted)", report["control"]),
    ]
    arms = "".join(
        f"<tr><td>{name}</td><td>{a['customers']:,}</td><td>{a['churned']:,}</td>"
        f"<td>{_percent(a['churn_rate'])}</td>"
        f"<td>{a['missing_outcome']:,}</td></tr>"
        for name, a in rows
    )
    deciles = "".join(
        f"<tr><td>{d['decile']}</td><td>{d['ranks'][0]:,}–{d['ranks'][1]:,}</td>"
        f"<td>{d['contacted']['customers']:,}</td><td>{d['control']['customers']:,}</td>"
        f"<td>{_points(d['churn_rate_reduction'])}</td><td>{interval(d['ci95'], _points)}</td>"
        f"<td>{_points(d['planned_reduction'])}</td></tr>"
        for d in report["by_risk_decile"]
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report["notes"])
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:1em auto;color:#222}"
        "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
        "th{background:#eee}figure{display:inline-block;margin:0.5em}img{max-width:28em}"
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>churnflow campaign report</title>"
        f"<style>{style}</style></head><body><h1>Campaign report</h1>"
        f"<p id='headline'>Churn rate reduction <b>{_points(effect['churn_rate_reduction'])}</b> "
        f"(95% interval {interval(effect['ci95'], _points)}); customers saved "
        f"<b>{_count(saved.get('estimate'))}</b> "
        f"({interval(saved.get('ci95'), lambda v: f'{v:,.1f}')}); net saving <b>{_money(net.get('estimate'))}</b> "
        f"({interval(net.get('ci95'), _money)}).</p>"
        f"<p>Planned: reduction {_points(planned['churn_rate_reduction'])}, "
        f"{planned['customers_saved']:,.1f} customers saved, net saving {_money(planned['net_saving'])}.</p>"
        "<table><tr><th>group</th><th>customers with outcome</th><th>churned</th><th>churn rate</th>"
        f"<th>missing outcome</th></tr>{arms}</table>"
        f"{'<ul>' + notes + '</ul>' if notes else ''}"
        f"<p><small>{html.escape(report['method'])}. "
        + " ".join(f"{html.escape(k)} = {html.escape(v)}." for k, v in report["definitions"].items())
        + "</small></p>"
        "<h2>By risk decile of the list</h2><table><tr><th>decile</th><th>ranks</th><th>contacted</th>"
        "<th>control</th><th>reduction</th><th>95% interval</th><th>planned</th></tr>"
        f"{deciles}</table><h2>Charts</h2>{images}</body></html>\n"
    )


def campaign_report(plan_uri: str, outcomes_uri: str, output: str | Path, fmt: str | None = None) -> dict[str, Any]:
    """Reads the plan and the outcomes, writes report.json, report.html and the charts into `output`."""
    plan = read_plan(plan_uri)
    outcomes = read_outcomes(outcomes_uri, plan.id_column, fmt)
    report = measure(plan, outcomes)
    directory = Path(output)
    directory.mkdir(parents=True, exist_ok=True)
    # who was in which arm and what they did: what `plan --uplift-from` learns from
    known = [i for i, key in enumerate(plan.ids) if key in outcomes]
    pd_rows = [f"{plan.id_column},group,churned"] + [
        f"{_csv(plan.ids[i])},{'control' if plan.control[i] else 'contact'},{outcomes[plan.ids[i]]}" for i in known
    ]
    (directory / "customers.csv").write_text("\n".join(pd_rows) + "\n")
    charts = plot_report(report, directory)
    (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (directory / "report.html").write_text(render_html(report, charts))
    return report


def _csv(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The short summary the CLI and the pipeline component print."""
    effect, contacted, control = report["effect"], report["contacted"], report["control"]

    def rate(arm: dict[str, Any]) -> str:
        return "—" if arm["churn_rate"] is None else f"{100 * arm['churn_rate']:.2f}%"

    lines = [
        f"contacted: {contacted['churned']:,} of {contacted['customers']:,} churned ({rate(contacted)}); "
        f"control: {control['churned']:,} of {control['customers']:,} ({rate(control)})",
    ]
    if effect["churn_rate_reduction"] is not None:
        low, high = effect["ci95"]
        saved, net = effect["customers_saved"], effect["net_saving"]
        lines.append(
            f"churn rate reduction {_points(effect['churn_rate_reduction'])} (95% interval {_points(low)} to "
            f"{_points(high)}, Newcombe); customers saved {saved['estimate']:,.1f} "
            f"({saved['ci95'][0]:,.1f} to {saved['ci95'][1]:,.1f}); net saving {_money(net['estimate'])} "
            f"({_money(net['ci95'][0])} to {_money(net['ci95'][1])})"
        )
    planned = report["planned"]
    lines.append(
        f"planned: reduction {_points(planned['churn_rate_reduction'])}, {planned['customers_saved']:,.1f} saved, "
        f"net saving {_money(planned['net_saving'])}"
    )
    return lines + [f"note: {n}" for n in report["notes"]]
