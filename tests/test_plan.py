"""Issue 15 item 4: the campaign planner against a brute-force optimum, and its control group."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pyarrow as pa
import pytest

from churnflow.campaigns.plan import Campaign, make_plan
from churnflow.core.errors import ChurnflowError


def scores(values: np.ndarray) -> pa.Table:
    order = np.argsort(-values, kind="stable")
    return pa.table(
        {
            "customer_id": [f"C{i}" for i in order],
            "probability": np.full(len(values), 0.5),
            "value_at_risk": values[order],
        }
    )


def brute_force(values: np.ndarray, campaign: Campaign) -> float:
    """The best total expected net saving over every subset the campaign allows."""
    net = campaign.net(values)
    best = 0.0
    for size in range(len(values) + 1):
        if campaign.top is not None and size > campaign.top:
            break
        if campaign.budget is not None and size * campaign.cost_per_contact > campaign.budget + 1e-9:
            break
        for subset in itertools.combinations(range(len(values)), size):
            best = max(best, float(net[list(subset)].sum()))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_planner_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    values = np.round(rng.exponential(80, 10), 2)
    base = {"contact_cost": float(rng.uniform(1, 20)), "offer_cost": float(rng.uniform(0, 60))}
    base["save_rate"] = float(rng.uniform(0.1, 0.9))
    campaigns = [Campaign(**base, control_fraction=0)]
    campaigns += [Campaign(**base, top=k, control_fraction=0) for k in (0, 1, 3, 7, 10)]
    campaigns += [Campaign(**base, budget=b, control_fraction=0) for b in (0.0, 15.0, 60.0, 140.0, 1e6)]
    for campaign in campaigns:
        plan = make_plan(scores(values), "customer_id", campaign)
        assert plan.expected_saving == pytest.approx(brute_force(values, campaign), abs=1e-9), campaign
        assert (plan.net > 0).all()
        if campaign.budget is not None:
            assert plan.contacted * campaign.cost_per_contact <= campaign.budget + 1e-9


def test_control_group_is_seeded_random_and_leaves_the_contacted_list_whole():
    values = np.linspace(1000, 10, 5000)
    campaign = Campaign(contact_cost=5, offer_cost=20, save_rate=0.3, budget=11 * 1000, control_fraction=0.1, seed=7)
    plan = make_plan(scores(values), "customer_id", campaign)
    assert plan.contacted == 1000  # the budget buys 1,000 contacts at 11 each
    assert plan.control.sum() == len(plan.net) - 1000 == pytest.approx(0.1 * len(plan.net), abs=1)
    again = make_plan(scores(values), "customer_id", campaign)
    assert np.array_equal(again.control, plan.control)
    other = make_plan(scores(values), "customer_id", Campaign(**{**campaign.__dict__, "seed": 8}))
    assert not np.array_equal(other.control, plan.control)
    # random, not the top or the tail of the list: the control's mean rank is near the list's middle
    ranks = np.flatnonzero(plan.control)
    assert abs(ranks.mean() - len(plan.net) / 2) < 0.1 * len(plan.net)
    assert plan.expected_saving == pytest.approx(plan.net[~plan.control].sum())


def test_bad_campaigns_are_one_line_errors():
    cases = {
        "--save-rate": {"save_rate": 1.5},
        "--contact-cost": {"contact_cost": -1},
        "--control-fraction": {"control_fraction": 1.0},
        "--budget or --top, not both": {"budget": 10, "top": 3},
    }
    for message, change in cases.items():
        campaign = Campaign(**{"contact_cost": 1, "offer_cost": 1, "save_rate": 0.5, **change})
        with pytest.raises(ChurnflowError, match=message):
            make_plan(scores(np.array([3.0, 2.0])), "customer_id", campaign)


# Issue 25 item 2: planning with the measurement in mind.


def test_power_calculation_matches_the_textbook_sample_size():
    from churnflow.campaigns.plan import control_needed, detectable_reduction

    # 0.5 against 0.4 at alpha 0.05 two-sided, power 0.8: n = (1.96 + 0.8416)² × 2 × 0.25 / 0.1² ≈ 392.4 per group
    assert detectable_reduction(0.5, 393, 393) == pytest.approx(0.1, abs=2e-4)
    assert detectable_reduction(0.5, 392, 392) > 0.1
    # beside a huge contacted group the control group alone carries the variance: half of the 785 above
    assert control_needed(0.5, 0.1, 10**9) == 197
    assert control_needed(0.5, 0.1, 393) == 392  # the other way round
    assert control_needed(0.5, 0.01, 100) is None  # 100 contacted can never show one point


def test_small_control_groups_warn_and_min_control_fixes_them(tmp_path, capsys):
    from churnflow.cli import main

    table = scores(np.linspace(900, 300, 5000))
    import pyarrow.parquet as pq

    pq.write_table(table, tmp_path / "scores.parquet")
    base = ["plan", "--scores", str(tmp_path / "scores.parquet"), "--contact-cost", "5", "--offer-cost", "20",
            "--save-rate", "0.3", "--budget", "5500"]  # fmt: skip
    assert main([*base, "--output", str(tmp_path / "small")]) == 0
    out = capsys.readouterr().out
    plan = json.loads((tmp_path / "small" / "plan.json").read_text())
    measured = plan["measurement"]
    assert plan["contacted"] == 500 and plan["control"] == 56
    assert measured["alpha_two_sided"] == 0.05 and measured["power"] == 0.8
    assert measured["expected_reduction"] == pytest.approx(0.15)  # save_rate × 0.5
    needed = measured["control_needed"]
    assert needed > 56 and measured["detectable_reduction"] > 0.15
    assert (
        f"warning: a control group of 56 detects a churn rate reduction of {100 * measured['detectable_reduction']:.1f}"
        in out
    )
    assert f"(--min-control {needed})" in out
    assert main([*base, "--output", str(tmp_path / "enough"), "--min-control", str(needed)]) == 0
    out = capsys.readouterr().out
    plan = json.loads((tmp_path / "enough" / "plan.json").read_text())
    assert plan["contacted"] == 500 and plan["control"] == needed and "warning" not in out
    assert plan["measurement"]["detectable_reduction"] <= 0.15


def test_a_budget_below_one_contact_is_an_error_line(tmp_path, capsys):
    import pyarrow.parquet as pq

    from churnflow.cli import main

    pq.write_table(scores(np.array([300.0, 200.0])), tmp_path / "scores.parquet")
    code = main(["plan", "--scores", str(tmp_path / "scores.parquet"), "--output", str(tmp_path / "p"),
                 "--contact-cost", "5", "--offer-cost", "0", "--save-rate", "0.3", "--budget", "3"])  # fmt: skip
    err = capsys.readouterr().err
    expected = "--budget: 3.00 cannot pay for one contact (each costs 5.00: contact_cost + save_rate × offer_cost)"
    assert code == 2 and err == f"churnflow: error: {expected}\n"
    assert not (tmp_path / "p").exists()


def test_chart_marks_the_printed_saving_and_where_the_budget_binds(tmp_path):
    from churnflow.campaigns.plan import write_plan

    campaign = Campaign(contact_cost=5, offer_cost=20, save_rate=0.3, budget=5500, seed=1, currency="EUR")
    plan = make_plan(scores(np.linspace(900, 300, 5000)), "customer_id", campaign)
    assert plan.budget_binds_at == 500 == plan.contacted
    import matplotlib.pyplot as plt

    drawn = []
    original = plt.Figure.savefig
    try:
        plt.Figure.savefig = lambda figure, path, *a, **k: (drawn.append(figure), original(figure, path, *a, **k))[1]
        write_plan(plan, tmp_path)
    finally:
        plt.Figure.savefig = original
    axis = drawn[0].axes[0]
    labels = [text.get_text() for text in axis.get_legend().get_texts()]
    assert f"plan: 500 contacted, expected net saving EUR {plan.expected_saving:,.2f}" in labels
    assert "budget EUR 5,500.00 binds at 500 contacts" in labels
    marker = next(line for line in axis.get_lines() if line.get_label().startswith("plan:"))
    assert list(marker.get_xdata()) == [500] and list(marker.get_ydata()) == [pytest.approx(plan.expected_saving)]
    drawn[0].canvas.draw()
    ticks = [t.get_text() for t in axis.get_yticklabels() if t.get_text()]
    assert any("," in t and t.startswith("EUR ") for t in ticks), ticks
    assert "EUR" in axis.get_ylabel()
    call_list = (tmp_path / "call_list.csv").read_text().splitlines()
    assert call_list[0].startswith('"customer_id","rank","group"') and call_list[1].split(",")[1] == "1"


def test_call_list_has_rank_segments_and_actionable_reasons_in_their_unit(model_dir, tmp_path, capsys):
    import pandas as pd

    from churnflow.cli import main
    from churnflow.core.synthetic import synthetic_customers
    from churnflow.scoring.bulk import score_table

    from .test_campaign import chromium

    frame = synthetic_customers(400, seed=12)
    frame["region"] = np.where(np.arange(400) % 3 == 0, "north", "south")
    frame.to_csv(tmp_path / "base.csv", index=False)
    config = (
        "id: customer_id\ntarget: churn\nnumeric: [tenure, usage, age, monthly_charges]\n"
        "categorical: [contract_type]\nvalue: {column: monthly_charges, horizon_months: 12}\nsegments: [region]\n"
    )
    (tmp_path / "all.yaml").write_text(config)
    (tmp_path / "actionable.yaml").write_text(config + "actionable: [contract_type, usage]\n")
    from churnflow.core.config import load_config

    score_table(str(model_dir), str(tmp_path / "base.csv"), str(tmp_path / "s.parquet"),
                config=load_config(tmp_path / "all.yaml"))  # fmt: skip
    lists = {}
    for name in ("all", "actionable"):
        assert main(["plan", "--scores", str(tmp_path / "s.parquet"), "--output", str(tmp_path / name),
                     "--top", "60", "--contact-cost", "2", "--offer-cost", "10", "--save-rate", "0.3",
                     "--model-dir", str(model_dir), "--data", str(tmp_path / "base.csv"),
                     "--config", str(tmp_path / f"{name}.yaml"), "--report", "html"]) == 0  # fmt: skip
        lists[name] = pd.read_csv(tmp_path / name / "call_list.csv", keep_default_na=False)
    capsys.readouterr()
    calls = lists["actionable"]
    ranked = pd.read_parquet(tmp_path / "s.parquet")
    assert list(calls.columns[:4]) == ["customer_id", "rank", "region", "group"]
    assert calls["rank"].tolist() == ranked["rank"].head(len(calls)).tolist() == list(range(1, len(calls) + 1))
    regions = frame.set_index("customer_id").loc[calls.customer_id, "region"].tolist()
    assert calls.region.tolist() == regions
    reasons = [r for k in (1, 2, 3) for r in calls[f"reason_{k}"] if r]
    every = [r for k in (1, 2, 3) for r in lists["all"][f"reason_{k}"] if r]
    assert reasons and all(r.endswith(" churn probability)") for r in reasons + every)
    assert {r.split("=")[0] for r in reasons} <= {"contract_type", "usage"}
    assert {r.split("=")[0] for r in every} - {"contract_type", "usage"}  # without it, tenure & co. come in
    page = tmp_path / "actionable" / "plan.html"
    text = page.read_text()
    assert "<script" not in text and text.count("data:image/png;base64,") == 2
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile")
    assert dom.returncode == 0 and "Campaign plan" in dom.stdout and "churn probability" in dom.stdout
    assert dom.stdout.count("<tr>") == 1 + 25


def test_actionable_columns_must_be_features():
    from churnflow.core.config import parse_config

    with pytest.raises(
        ChurnflowError, match=r"actionable columns must be features \(numeric or categorical\): \['x'\]"
    ):
        parse_config({"target": "churn", "numeric": ["tenure"], "actionable": ["x"]})
