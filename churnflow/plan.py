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

from churnflow.errors import ChurnflowError

FORMULA = "expected net saving = save_rate × value_at_risk − contact_cost − save_rate × offer_cost"
ASSUMPTIONS = [
    "a contact saves a would-be churner with probability save_rate, whoever they are",
    "the offer is paid only for customers it saves",
    "contacting a customer who would have stayed changes nothing",
    "contact and offer costs are the same for every customer",
    "the control group is a seeded random share of the chosen list and is not contacted",
]
CURVE_POINTS = 2000


@dataclass(frozen=True)
class Campaign:
    contact_cost: float
    offer_cost: float
    save_rate: float
    budget: float | None = None
    top: int | None = None
    control_fraction: float = 0.1
    seed: int = 0

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


def choose(net_sorted: np.ndarray, campaign: Campaign) -> int:
    """How many of the customers, in rank order (net falling), the plan contacts."""
    positive = int(np.searchsorted(-net_sorted, 0.0, side="left"))  # net > 0
    limit = campaign.contact_limit()
    return positive if limit is None else min(positive, limit)


def list_size(contacted: int, available: int, control_fraction: float) -> int:
    """The list (contacted plus control) large enough that `contacted` are contacted, when there are enough."""
    if control_fraction == 0 or contacted == 0:
        return contacted
    return min(available, int(math.ceil(contacted / (1 - control_fraction))))


def control_mask(size: int, contacted: int, fraction: float, seed: int) -> np.ndarray:
    """Seeded random control group over the list, marked True: what is left after `contacted`, and at
    least round(size × fraction) (when the base is too small to keep both at full size)."""
    mask = np.zeros(size, dtype=bool)
    count = 0 if fraction == 0 else max(size - contacted, int(round(size * fraction)))
    if count:
        mask[np.random.default_rng(seed).choice(size, count, replace=False)] = True
    return mask


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
    reasons: list[list[str]] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def contacted(self) -> int:
        return int((~self.control).sum())

    @property
    def expected_saving(self) -> float:
        """Expected net saving of the contacted part of the list."""
        return float(self.net[~self.control].sum())

    def summary(self) -> dict[str, Any]:
        c = self.campaign
        return {
            "formula": FORMULA,
            "assumptions": ASSUMPTIONS,
            "parameters": {
                "contact_cost": c.contact_cost,
                "offer_cost": c.offer_cost,
                "save_rate": c.save_rate,
                "budget": c.budget,
                "top": c.top,
                "control_fraction": c.control_fraction,
                "seed": c.seed,
            },
            "customers_scored": self.customers,
            "list_size": len(self.net),
            "contacted": self.contacted,
            "control": int(self.control.sum()),
            "expected_net_saving": self.expected_saving,
            "expected_spend": self.contacted * c.cost_per_contact,
            "value_at_risk_contacted": float(self.value_at_risk[~self.control].sum()),
            "total_value_at_risk": self.total_value_at_risk,
            "notes": self.notes,
        }


def read_scores(uri: str, fmt: str | None = None) -> tuple[pa.Table, str]:
    """The ranked scores (only the columns the plan needs), sorted by rank."""
    from churnflow.score import open_table

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


def make_plan(scores: pa.Table, id_column: str, campaign: Campaign) -> Plan:
    """The list, its control group and the curves, from scores sorted by value at risk (highest first)."""
    campaign.check()
    value = scores.column("value_at_risk").to_numpy(zero_copy_only=False).astype(np.float64)
    probability = scores.column("probability").to_numpy(zero_copy_only=False).astype(np.float64)
    if len(value) > 1 and np.any(np.diff(value) > 1e-9 * np.maximum(1.0, np.abs(value[:-1]))):
        raise ChurnflowError("scores: not in rank order (value_at_risk must fall with rank)")
    net = campaign.net(value)
    contacted = choose(net, campaign)
    size = list_size(contacted, len(value), campaign.control_fraction)
    control = control_mask(size, contacted, campaign.control_fraction, campaign.seed)
    notes = []
    if campaign.top is not None and contacted < campaign.top:
        notes.append(f"only {contacted} customers have a positive expected net saving (asked for {campaign.top})")
    if size - int(control.sum()) < contacted:
        notes.append("the base is too small to keep the contacted part at full size beside the control group")
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
        notes=notes,
    )


def write_plan(plan: Plan, output: str | Path) -> dict[str, Path]:
    """call_list.csv, plan.json and the two charts in `output`."""
    import pyarrow.csv as pacsv

    directory = Path(output)
    directory.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        plan.id_column: plan.ids,
        "group": pa.array(np.where(plan.control, "control", "contact")),
        "probability": plan.probability,
        "value_at_risk": plan.value_at_risk,
        "expected_net_saving": np.where(plan.control, 0.0, plan.net),
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


def plot(plan: Plan, directory: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    saving_path, gains_path = directory / "expected_saving.png", directory / "cumulative_gains.png"
    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=110)
    axis.plot(plan.curve_x, plan.curve_saving, color="#1f77b4")
    chosen = len(plan.net)
    if chosen:
        axis.axvline(chosen, color="#d62728", linestyle="--", label=f"chosen list: {chosen:,} customers")
        axis.legend(loc="lower right")
    axis.set_xlabel("customers contacted, in rank order")
    axis.set_ylabel("cumulative expected net saving")
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


def explain_list(plan: Plan, model_uri: str, data_uri: str, config: Any = None, batch_rows: int = 200_000) -> None:
    """Fills `plan.reasons`: each listed customer's top three reasons, from the decomposition `:explain`
    uses (predictor/explain.py), read from the customer table again (only the listed rows are explained)."""
    from churnflow.bulk_input import BatchEncoder
    from churnflow.predictor.explain import explain_rows
    from churnflow.score import ROW_COLUMN, ReleasedModel, _batches, open_table

    model = ReleasedModel.load(model_uri)
    contract = model.contract
    by_row = plan.id_column == ROW_COLUMN
    columns = list(dict.fromkeys(([] if by_row else [plan.id_column]) + contract.input_columns))
    dataset, _ = open_table(data_uri, columns, batch_rows)
    encoder = BatchEncoder(contract)
    wanted = plan.ids.cast(pa.int64()) if by_row else plan.ids.cast(pa.string())
    wanted_rows = wanted.to_numpy(zero_copy_only=False) if by_row else None
    found: dict[Any, list[str]] = {}
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
        encoded = encoder.encode(subset)
        if not len(encoded.features):
            continue
        raw = model.scorer.sklearn.predict_proba(encoded.features)[:, 1]
        answers = explain_rows(model.scorer.sklearn, contract, encoded.features, model.calibrator.apply(raw))
        good = np.flatnonzero(encoded.good)
        for answer, row in zip(answers, good, strict=True):
            found[keys[int(row)].as_py()] = [
                f"{column}={_cell(subset.column(column)[int(row)].as_py())} (+{push:.3f})"
                for column, push in answer["top_increasing"][:3]
            ]
    plan.reasons = [found.get(key, []) for key in wanted.to_pylist()]
    missing = sum(1 for key in wanted.to_pylist() if key not in found)
    if missing:
        plan.notes.append(f"{missing} listed customers were not found in the customer table: no reasons for them")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value).strip()
    return text[:40] if text else "blank"
