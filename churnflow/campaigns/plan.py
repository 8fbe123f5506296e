"""`churnflow plan`: whom to contact, from the ranked scores, within a budget or a list size.

Expected net saving of contacting customer i (the formula printed with every plan):

    net_i = save_rate × value_at_risk_i − contact_cost − save_rate × offer_cost

Assumptions: a contact saves a would-be churner with probability save_rate, whoever they are; the offer
is paid only for saved customers; contacting someone who was going to stay changes nothing; costs are
the same for everyone. Under these, net_i grows with value at risk, so the best list of any size is a
prefix of the scores in rank order: the plan takes customers while net_i > 0, up to --top K or as many
as --budget pays for (each contact's expected spend is contact_cost + save_rate × offer_cost).

A seeded random control group (default 10%) is drawn from the chosen list and is not contacted, so
that the campaign's real effect can be measured against it afterwards; the list is made larger by
that share so the contacted part still uses the budget or K.

The control group must be large enough to measure the campaign. The plan computes the smallest churn
rate reduction its control group can detect, with the standard normal-approximation sample size for
two proportions (two-sided alpha 0.05, power 0.8, the contacted customers' expected churn rate as the
variance in both groups):

    detectable reduction = (z(1 − alpha/2) + z(power)) × sqrt(p (1 − p) (1/n_contacted + 1/n_control))

and, solved for n_control, the control group needed to detect the reduction the plan itself expects
(save_rate × p). `--min-control N` makes the control group at least N.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from churnflow.core.errors import ChurnflowError

FORMULA = "expected net saving = save_rate × value_at_risk − contact_cost − save_rate × offer_cost"
ASSUMPTIONS = [
    "a contact saves a would-be churner with probability save_rate, whoever they are",
    "the offer is paid only for customers it saves",
    "contacting a customer who would have stayed changes nothing",
    "contact and offer costs are the same for every customer",
    "the control group is a seeded random share of the chosen list and is not contacted",
]
UPLIFT_FORMULA = (
    "expected net saving = uplift × (value − offer_cost) − contact_cost, value = value_at_risk / probability"
)
CURVE_POINTS = 2000
ALPHA = 0.05  # two-sided significance of the campaign measurement
POWER = 0.8  # chance of detecting the planned reduction when it is real
REASON_UNIT = "churn probability"  # what a reason's (+0.123) adds: the explanation's unit


@dataclass(frozen=True)
class Campaign:
    contact_cost: float
    offer_cost: float
    save_rate: float
    budget: float | None = None
    top: int | None = None
    control_fraction: float = 0.1
    seed: int = 0
    min_control: int = 0
    currency: str = ""

    @classmethod
    def from_parameters(
        cls,
        *,
        contact_cost: float,
        offer_cost: float,
        save_rate: float,
        budget: float,
        top: int,
        control_fraction: float,
        seed: int,
    ) -> Campaign:
        """From pipeline parameters, which cannot be None: a budget or top of 0 means none."""
        return cls(
            contact_cost=contact_cost,
            offer_cost=offer_cost,
            save_rate=save_rate,
            budget=budget if budget > 0 else None,
            top=top if top > 0 else None,
            control_fraction=control_fraction,
            seed=seed,
        )

    def check(self) -> None:
        for name in ("contact_cost", "offer_cost"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ChurnflowError(f"--{name.replace('_', '-')}: expected a number ≥ 0, got {value}")
        if not (0 < self.save_rate <= 1):
            raise ChurnflowError(f"--save-rate: expected a share in (0, 1], got {self.save_rate}")
        if self.budget is not None and self.top is not None:
            raise ChurnflowError("plan: give --budget or --top, not both")
        if self.budget is not None and (not math.isfinite(self.budget) or self.budget < 0):
            raise ChurnflowError(f"--budget: expected an amount ≥ 0, got {self.budget}")
        if self.top is not None and self.top < 0:
            raise ChurnflowError(f"--top: expected a count ≥ 0, got {self.top}")
        if not (0 <= self.control_fraction < 1):
            raise ChurnflowError(f"--control-fraction: expected a share in [0, 1), got {self.control_fraction}")
        if self.min_control < 0:
            raise ChurnflowError(f"--min-control: expected a count ≥ 0, got {self.min_control}")

    def check_affordable(self) -> None:
        """A budget that cannot pay for one contact plans nothing: an error, not an empty call list."""
        if self.budget is not None and self.budget < self.cost_per_contact:
            raise ChurnflowError(
                f"--budget: {self.budget:,.2f} cannot pay for one contact (each costs {self.cost_per_contact:,.2f}: "
                "contact_cost + save_rate × offer_cost)"
            )

    @property
    def cost_per_contact(self) -> float:
        """Expected spend of one contact: the contact, plus the offer when it saves the customer."""
        return self.contact_cost + self.save_rate * self.offer_cost

    def net(self, value_at_risk: np.ndarray) -> np.ndarray:
        return self.save_rate * value_at_risk - self.cost_per_contact

    def contact_limit(self) -> int | None:
        """Most customers the campaign may contact (None: no limit but a positive saving)."""
        if self.top is not None:
            return self.top
        if self.budget is not None:
            if self.cost_per_contact == 0:
                return None
            return int(math.floor(self.budget / self.cost_per_contact + 1e-9))
        return None


def choose(net_sorted: np.ndarray, campaign: Campaign, spend: np.ndarray | None = None) -> int:
    """How many of the customers, in rank order (net falling), the plan contacts; `spend` is each
    customer's expected spend when it differs between customers (uplift ranking)."""
    positive = int(np.searchsorted(-net_sorted, 0.0, side="left"))  # net > 0
    limit = budget_limit(campaign, spend)
    return positive if limit is None else min(positive, limit)


def budget_limit(campaign: Campaign, spend: np.ndarray | None = None) -> int | None:
    """Most customers, in list order, that --top or --budget allow (None: no limit)."""
    if spend is None or campaign.budget is None:
        return campaign.contact_limit()
    return int(np.searchsorted(np.cumsum(spend), campaign.budget + 1e-9, side="right"))


def list_size(contacted: int, available: int, control_fraction: float, min_control: int = 0) -> int:
    """The list (contacted plus control) large enough that `contacted` are contacted, when there are
    enough, with a control group of at least `min_control`."""
    if contacted == 0:
        return 0
    size = contacted if control_fraction == 0 else int(math.ceil(contacted / (1 - control_fraction)))
    return min(available, max(size, contacted + min_control))


def control_mask(size: int, contacted: int, fraction: float, seed: int) -> np.ndarray:
    """Seeded random control group over the list, marked True: what is left after `contacted`, and at
    least round(size × fraction) (when the base is too small to keep both at full size)."""
    mask = np.zeros(size, dtype=bool)
    count = max(size - contacted, int(round(size * fraction)))
    if count:
        mask[np.random.default_rng(seed).choice(size, count, replace=False)] = True
    return mask


def _z(quantile: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(quantile))


def detectable_reduction(
    churn_rate: float, contacted: int, control: int, alpha: float = ALPHA, power: float = POWER
) -> float | None:
    """Smallest churn rate reduction a campaign of this size detects (None: no one to compare)."""
    if contacted == 0 or control == 0:
        return None
    spread = math.sqrt(churn_rate * (1 - churn_rate) * (1 / contacted + 1 / control))
    return (_z(1 - alpha / 2) + _z(power)) * spread


def control_needed(
    churn_rate: float, reduction: float, contacted: int, alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """Control group that detects `reduction` beside `contacted` customers (None: none is large enough)."""
    if contacted == 0 or reduction <= 0 or not 0 < churn_rate < 1:
        return None
    room = (reduction / (_z(1 - alpha / 2) + _z(power))) ** 2 / (churn_rate * (1 - churn_rate)) - 1 / contacted
    return None if room <= 0 else int(math.ceil(1 / room))


@dataclass
class Plan:
    campaign: Campaign
    ids: pa.Array
    id_column: str
    probability: np.ndarray
    value_at_risk: np.ndarray
    net: np.ndarray
    control: np.ndarray
    curve_x: np.ndarray
    curve_saving: np.ndarray
    gains_value: np.ndarray
    gains_churners: np.ndarray
    customers: int
    total_value_at_risk: float
    curve_net_full: np.ndarray
    ranks: np.ndarray | None = None
    budget_limit: int | None = None
    uplift: np.ndarray | None = None
    reasons: list[list[str]] | None = None
    segments: dict[str, list[Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def contacted(self) -> int:
        return int((~self.control).sum())

    @property
    def budget_binds_at(self) -> int | None:
        """Contacts the budget pays for, when it stops the list before the saving turns negative."""
        positive = int((self.curve_net_full > 0).sum())
        limit = self.budget_limit
        return limit if limit is not None and limit < positive else None

    @property
    def expected_spend(self) -> float:
        """Contacts plus the offers they are expected to pay (uplift ranking: each customer's own uplift)."""
        if self.uplift is None:
            return self.contacted * self.campaign.cost_per_contact
        kept = np.clip(self.uplift[~self.control], 0, None)
        return float(self.contacted * self.campaign.contact_cost + kept.sum() * self.campaign.offer_cost)

    @property
    def expected_saving(self) -> float:
        """Expected net saving of the contacted part of the list."""
        return float(self.net[~self.control].sum())

    def measurement(self) -> dict[str, Any]:
        """Can the control group measure the effect the plan expects? (the power calculation)"""
        contacted, control = self.contacted, int(self.control.sum())
        churn_rate = float(self.probability[~self.control].mean()) if contacted else 0.0
        expected = self.campaign.save_rate * churn_rate
        if self.uplift is not None:  # ranked by uplift: the model's own estimate of the reduction
            expected = float(self.uplift[~self.control].mean()) if contacted else 0.0
        return {
            "method": "two-proportion sample size, normal approximation, the contacted customers' expected "
            "churn rate as the variance in both groups",
            "alpha_two_sided": ALPHA,
            "power": POWER,
            "expected_churn_rate_without_campaign": churn_rate,
            "expected_reduction": expected,
            "control": control,
            "detectable_reduction": detectable_reduction(churn_rate, contacted, control),
            "control_needed": control_needed(churn_rate, expected, contacted),
        }

    def measurement_note(self) -> str | None:
        """The warning `plan` prints when the control group is too small to see the expected effect."""
        m = self.measurement()
        needed, detectable = m["control_needed"], m["detectable_reduction"]
        if self.contacted == 0 or (needed is not None and m["control"] >= needed):
            return None
        can = (
            "no control group: the campaign cannot be measured"
            if detectable is None
            else f"a control group of {m['control']:,} detects a churn rate reduction of "
            f"{100 * detectable:.1f} points or more (two-sided alpha {ALPHA}, power {POWER})"
        )
        expects = f"the plan expects {100 * m['expected_reduction']:.1f} points"
        if needed is None:
            return f"{can}; {expects}, which no control group can detect beside {self.contacted:,} contacted"
        return f"{can}; {expects}: detecting that needs a control group of {needed:,} (--min-control {needed})"

    def summary(self) -> dict[str, Any]:
        c = self.campaign
        return {
            "formula": FORMULA if self.uplift is None else UPLIFT_FORMULA,
            "assumptions": ASSUMPTIONS,
            "parameters": {
                "contact_cost": c.contact_cost,
                "offer_cost": c.offer_cost,
                "save_rate": c.save_rate,
                "budget": c.budget,
                "top": c.top,
                "control_fraction": c.control_fraction,
                "seed": c.seed,
                "min_control": c.min_control,
                "currency": c.currency,
            },
            "id_column": self.id_column,
            "customers_scored": self.customers,
            "list_size": len(self.net),
            "contacted": self.contacted,
            "control": int(self.control.sum()),
            "expected_net_saving": self.expected_saving,
            "expected_spend": self.expected_spend,
            "value_at_risk_contacted": float(self.value_at_risk[~self.control].sum()),
            "total_value_at_risk": self.total_value_at_risk,
            "budget_binds_at": self.budget_binds_at,
            "ranking": "risk × value" if self.uplift is None else "uplift",
            "measurement": self.measurement(),
            "notes": self.notes,
        }


def read_scores(uri: str, fmt: str | None = None) -> tuple[pa.Table, str]:
    """The ranked scores (only the columns the plan needs), sorted by rank."""
    from churnflow.scoring.bulk import open_table

    dataset, _ = open_table(uri, ["probability", "value_at_risk"], 1 << 16, fmt)
    names = dataset.schema.names
    id_column = next((n for n in names if n not in ("probability", "churn", "value_at_risk", "rank")), None)
    if id_column is None:
        raise ChurnflowError(f"scores {uri}: no id or row column (expected the output of churnflow score)")
    columns = [id_column, "probability", "value_at_risk"] + (["rank"] if "rank" in names else [])
    table = dataset.to_table(columns=columns)
    for column in ("probability", "value_at_risk"):
        if not pa.types.is_floating(table.schema.field(column).type):
            table = table.set_column(
                table.schema.get_field_index(column), column, pc.cast(table.column(column), pa.float64())
            )
    order = np.argsort(-table.column("value_at_risk").to_numpy(), kind="stable")
    if "rank" in columns:
        order = np.argsort(table.column("rank").to_numpy(), kind="stable")
    return table.take(order), id_column


def make_plan(scores: pa.Table, id_column: str, campaign: Campaign, uplift: np.ndarray | None = None) -> Plan:
    """The list, its control group and the curves, from scores sorted by value at risk (highest first).

    With `uplift` (each customer's estimated churn reduction if contacted, aligned with `scores`) the
    customers are ranked by expected net saving = uplift × (value − offer_cost) − contact_cost instead,
    where value = value_at_risk / probability is what the customer is worth if kept."""
    campaign.check()
    value = scores.column("value_at_risk").to_numpy(zero_copy_only=False).astype(np.float64)
    probability = scores.column("probability").to_numpy(zero_copy_only=False).astype(np.float64)
    spend = None
    if uplift is None:
        if len(value) > 1 and np.any(np.diff(value) > 1e-9 * np.maximum(1.0, np.abs(value[:-1]))):
            raise ChurnflowError("scores: not in rank order (value_at_risk must fall with rank)")
        net = campaign.net(value)
    else:
        worth = np.divide(value, probability, out=np.zeros_like(value), where=probability > 0)
        unsorted = uplift * (worth - campaign.offer_cost) - campaign.contact_cost
        order = np.argsort(-unsorted, kind="stable")
        scores, value, probability = scores.take(order), value[order], probability[order]
        uplift, net = uplift[order], unsorted[order]
        spend = campaign.contact_cost + np.clip(uplift, 0, None) * campaign.offer_cost
    contacted = choose(net, campaign, spend)
    limit = budget_limit(campaign, spend) if campaign.budget is not None else None
    size = list_size(contacted, len(value), campaign.control_fraction, campaign.min_control)
    control = control_mask(size, contacted, campaign.control_fraction, campaign.seed)
    notes = []
    if campaign.top is not None and contacted < campaign.top:
        notes.append(f"only {contacted} customers have a positive expected net saving (asked for {campaign.top})")
    if size - int(control.sum()) < contacted:
        notes.append("the base is too small to keep the contacted part at full size beside the control group")
    ranks = (
        scores.column("rank").slice(0, size).to_numpy(zero_copy_only=False).astype(np.int64)
        if "rank" in scores.schema.names and uplift is None
        else np.arange(1, size + 1)
    )
    step = max(1, len(value) // CURVE_POINTS)
    cumulative = np.cumsum(net)
    x = np.arange(1, len(value) + 1)[::step]
    value_share = np.cumsum(value) / max(value.sum(), 1e-300)
    churn_share = np.cumsum(probability) / max(probability.sum(), 1e-300)
    return Plan(
        campaign=campaign,
        ids=scores.column(id_column).slice(0, size).combine_chunks(),
        id_column=id_column,
        probability=probability[:size],
        value_at_risk=value[:size],
        net=net[:size],
        control=control,
        curve_x=x,
        curve_saving=cumulative[::step],
        gains_value=value_share[::step],
        gains_churners=churn_share[::step],
        customers=len(value),
        total_value_at_risk=float(value.sum()),
        curve_net_full=net,
        ranks=ranks,
        budget_limit=limit,
        uplift=None if uplift is None else uplift[:size],
        notes=notes,
    )


def write_plan(plan: Plan, output: str | Path) -> dict[str, Path]:
    """call_list.csv, plan.json and the two charts in `output`."""
    import pyarrow.csv as pacsv

    directory = Path(output)
    directory.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        plan.id_column: plan.ids,
        "rank": plan.ranks if plan.ranks is not None else np.arange(1, len(plan.net) + 1),
        **{name: pa.array(values) for name, values in plan.segments.items()},
        "group": pa.array(np.where(plan.control, "control", "contact")),
        "probability": plan.probability,
        "value_at_risk": plan.value_at_risk,
        "expected_net_saving": np.where(plan.control, 0.0, plan.net),
        **({} if plan.uplift is None else {"uplift": plan.uplift}),
    }
    for k in range(3):
        data[f"reason_{k + 1}"] = pa.array(
            [r[k] if len(r) > k else "" for r in plan.reasons] if plan.reasons is not None else [""] * len(plan.net),
            pa.string(),
        )
    paths = {"call_list": directory / "call_list.csv", "plan": directory / "plan.json"}
    pacsv.write_csv(pa.table(data), paths["call_list"])
    paths["plan"].write_text(json.dumps(plan.summary(), indent=2) + "\n")
    paths.update(plot(plan, directory))
    return paths


def write_plan_html(plan: Plan, paths: dict[str, Path], rows: int = 25) -> Path:
    """plan.html beside the call list: the one-page campaign plan (self-contained: inline style, the
    charts as data URIs, no scripts), with the first `rows` customers of the call list."""
    import base64
    import html

    import pyarrow.csv as pacsv

    summary, currency = plan.summary(), plan.campaign.currency
    measurement = summary["measurement"]
    images = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode(paths[name].read_bytes()).decode()}"/></figure>'
        for name in ("expected_saving", "cumulative_gains")
    )
    calls = pacsv.read_csv(paths["call_list"]).slice(0, rows).to_pylist()
    shown = [c for c in (calls[0].keys() if calls else []) if c != "expected_net_saving"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in shown)

    def cell(value: Any) -> str:
        return f"{value:,.3f}" if isinstance(value, float) else html.escape("" if value is None else str(value))

    body = "".join("<tr>" + "".join(f"<td>{cell(r[c])}</td>" for c in shown) + "</tr>" for r in calls)
    detectable = measurement["detectable_reduction"]
    notes = [n for n in [plan.measurement_note(), *plan.notes] if n]
    parameters = ", ".join(f"{k} {v}" for k, v in summary["parameters"].items() if v not in (None, ""))
    style = (
        "body{font-family:sans-serif;max-width:64em;margin:1em auto;color:#222}"
        "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #bbb;padding:2px 6px}"
        "th{background:#eee}figure{display:inline-block;margin:0.5em}img{max-width:30em}"
    )
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>churnflow campaign plan</title>"
        f"<style>{style}</style></head><body><h1>Campaign plan</h1>"
        f"<p id='headline'>Contact <b>{summary['contacted']:,}</b> of {summary['customers_scored']:,} customers "
        f"(control group {summary['control']:,}, not contacted); expected spend "
        f"{money_text(summary['expected_spend'], currency)}; expected net saving "
        f"<b>{money_text(summary['expected_net_saving'], currency)}</b>.</p>"
        f"<p><small>{html.escape(summary['formula'])}. Parameters: {html.escape(parameters)}.</small></p>"
        f"<p>Measurement: the plan expects a churn rate reduction of "
        f"{100 * measurement['expected_reduction']:.1f} points; this control group detects "
        f"{'nothing' if detectable is None else f'{100 * detectable:.1f} points or more'} "
        f"(two-sided alpha {ALPHA}, power {POWER}).</p>"
        + ("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>" if notes else "")
        + f"{images}<h2>Call list (first {len(calls)} of {len(plan.net):,})</h2>"
        f"<p><small>Reasons: what each column adds to the customer's {REASON_UNIT}.</small></p>"
        f"<table><tr>{head}</tr>{body}</table></body></html>\n"
    )
    path = paths["call_list"].parent / "plan.html"
    path.write_text(page)
    return path


def plot(plan: Plan, directory: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    saving_path, gains_path = directory / "expected_saving.png", directory / "cumulative_gains.png"
    from matplotlib.ticker import FuncFormatter

    money = FuncFormatter(lambda v, _: money_text(v, plan.campaign.currency, decimals=0))
    count = FuncFormatter(lambda v, _: f"{v:,.0f}")
    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=110)
    axis.plot(plan.curve_x, plan.curve_saving, color="#1f77b4", label="top customers by rank, all contacted")
    if plan.contacted:
        # the saving the summary prints: the contacted customers only (the control group is not called)
        axis.plot([plan.contacted], [plan.expected_saving], "o", color="#d62728", zorder=3,
                  label=f"plan: {plan.contacted:,} contacted, expected net saving "
                  f"{money_text(plan.expected_saving, plan.campaign.currency)}")  # fmt: skip
        axis.axvline(plan.contacted, color="#d62728", linestyle="--", linewidth=1)
    binds = plan.budget_binds_at
    if binds is not None:
        axis.axvline(binds, color="#2ca02c", linestyle=":", linewidth=1.5,
                     label=f"budget {money_text(plan.campaign.budget or 0, plan.campaign.currency)} binds at "
                     f"{binds:,} contacts")  # fmt: skip
    axis.legend(loc="lower right", fontsize=8)
    axis.xaxis.set_major_formatter(count)
    axis.yaxis.set_major_formatter(money)
    axis.set_xlabel("customers contacted, in rank order")
    unit = plan.campaign.currency or "the value column's unit"
    axis.set_ylabel(f"cumulative expected net saving\n({unit})")
    axis.set_title("Expected saving by list size")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(saving_path)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=110)
    share = plan.curve_x / max(plan.customers, 1)
    axis.plot(share, plan.gains_value, label="value at risk captured")
    axis.plot(share, plan.gains_churners, label="expected churners captured")
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random order")
    axis.set_xlabel("share of customers, in rank order")
    axis.set_ylabel("share captured")
    axis.set_title("Cumulative gains")
    axis.legend(loc="lower right")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(gains_path)
    plt.close(figure)
    return {"expected_saving": saving_path, "cumulative_gains": gains_path}


def money_text(amount: float, currency: str = "", decimals: int = 2) -> str:
    """An amount with thousands separators and the currency, e.g. "EUR 108,893.66" or "108,893.66"."""
    text = f"{amount:,.{decimals}f}"
    return f"{currency} {text}" if currency else text


def explain_list(plan: Plan, model_uri: str, data_uri: str, config: Any = None, batch_rows: int = 200_000) -> None:
    """Fills `plan.reasons`: each listed customer's top three reasons, from the decomposition `:explain`
    uses (ReleasedModel.explain), read from the customer table again (only the listed rows are explained).

    A reason's number is what that column adds to the customer's churn probability. When the config
    names `actionable` columns, only those become reasons. The config's `segments` columns are copied
    into `plan.segments` from the same read."""
    from churnflow.core.released_model import ReleasedModel
    from churnflow.scoring.arrow_encoding import BatchEncoder
    from churnflow.scoring.bulk import ROW_COLUMN, _batches, open_table

    model = ReleasedModel.open(model_uri)
    contract = model.contract
    by_row = plan.id_column == ROW_COLUMN
    segments = list(getattr(config, "segments", None) or [])
    actionable = getattr(config, "actionable", None)
    columns = list(dict.fromkeys(([] if by_row else [plan.id_column]) + contract.input_columns + segments))
    dataset, _ = open_table(data_uri, columns, batch_rows)
    encoder = BatchEncoder(contract)
    wanted = plan.ids.cast(pa.int64()) if by_row else plan.ids.cast(pa.string())
    wanted_rows = wanted.to_numpy(zero_copy_only=False) if by_row else None
    found: dict[Any, list[str]] = {}
    segment_values: dict[Any, list[Any]] = {}
    start = 0
    for batch in _batches(dataset, columns, batch_rows, data_uri):
        if by_row:
            keys = pa.array(np.arange(start, start + batch.num_rows))
            mask = pa.array(np.isin(keys.to_numpy(), wanted_rows))
        else:
            keys = batch.column(plan.id_column).cast(pa.string())
            mask = pc.is_in(keys, value_set=wanted)
        start += batch.num_rows
        subset, keys = batch.filter(mask), keys.filter(mask)
        if subset.num_rows == 0:
            continue
        if segments:
            values = [subset.column(name).to_pylist() for name in segments]
            for row, key in enumerate(keys.to_pylist()):
                segment_values[key] = [column[row] for column in values]
        encoded = encoder.encode(subset)
        if not len(encoded.features):
            continue
        answers = model.explain(encoded.features)
        good = np.flatnonzero(encoded.good)
        for answer, row in zip(answers, good, strict=True):
            pushes = answer["top_increasing"]
            if actionable is not None:
                chosen = [(c, v) for c, v in answer["contributions"].items() if c in actionable and v > 0]
                pushes = sorted(chosen, key=lambda item: -item[1])
            found[keys[int(row)].as_py()] = [
                f"{column}={_cell(subset.column(column)[int(row)].as_py())} (+{push:.3f} {REASON_UNIT})"
                for column, push in pushes[:3]
            ]
    plan.reasons = [found.get(key, []) for key in wanted.to_pylist()]
    for index, name in enumerate(segments):
        plan.segments[name] = [segment_values.get(key, [None] * len(segments))[index] for key in wanted.to_pylist()]
    missing = sum(1 for key in wanted.to_pylist() if key not in found)
    if missing:
        plan.notes.append(f"{missing} listed customers were not found in the customer table: no reasons for them")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value).strip()
    return text[:40] if text else "blank"
