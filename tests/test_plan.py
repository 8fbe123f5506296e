"""Issue 15 item 4: the campaign planner against a brute-force optimum, and its control group."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest

from churnflow.errors import ChurnflowError
from churnflow.plan import Campaign, make_plan


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
