"""Issue 25 item 1: `churnflow campaign-report` measures a campaign against its randomized control group."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churnflow.campaigns.measurement import newcombe, wilson
from churnflow.cli import main

from .conftest import CHURNFLOW

TRUE_REDUCTION = 0.08  # the simulated offer lowers every contacted customer's churn probability by this much


def write_scores(path: Path, customers: int, seed: int) -> pd.DataFrame:
    """A table shaped like `churnflow score`'s output: ranked by value at risk, rank 1 first."""
    rng = np.random.default_rng(seed)
    probability = rng.uniform(0.15, 0.75, customers)  # ≥ 0.15: the reduction never clips at 0
    value = rng.gamma(4, 200, customers)
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i:06d}" for i in range(customers)],
            "probability": probability,
            "churn": (probability >= 0.5).astype(np.int64),
            "value_at_risk": probability * value,
        }
    )
    frame = frame.sort_values("value_at_risk", ascending=False, kind="stable").reset_index(drop=True)
    frame["rank"] = np.arange(1, customers + 1)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return frame


def draw_outcomes(call_list: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Who churned: control customers at their probability, contacted ones TRUE_REDUCTION less."""
    rng = np.random.default_rng(seed)
    p = call_list.probability - np.where(call_list.group == "contact", TRUE_REDUCTION, 0.0)
    return pd.DataFrame({"customer_id": call_list.customer_id, "churned": (rng.random(len(p)) < p).astype(int)})


def test_newcombe_interval_matches_the_published_examples():
    # Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10
    assert newcombe(56, 70, 48, 80) == pytest.approx((0.0524, 0.3339), abs=5e-5)
    assert newcombe(9, 10, 3, 10) == pytest.approx((0.1705, 0.8090), abs=5e-5)
    low, high = wilson(0, 10)
    assert low == 0 and high == pytest.approx(0.2775, abs=5e-5)  # Wilson's interval for 0 of 10


def test_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(3)
    covered = 0
    for _ in range(2000):
        control, contacted = rng.binomial(60, 0.3), rng.binomial(500, 0.3 - TRUE_REDUCTION)
        low, high = newcombe(control, 60, contacted, 500)
        covered += low <= TRUE_REDUCTION <= high
    assert 0.93 <= covered / 2000 <= 0.975, covered / 2000


def test_simulated_campaign_is_measured_and_its_interval_covers_the_truth(tmp_path, capsys):
    write_scores(tmp_path / "scores.parquet", 30_000, seed=1)
    plan_dir, report_dir = tmp_path / "plan", tmp_path / "report"
    assert main(["plan", "--scores", str(tmp_path / "scores.parquet"), "--output", str(plan_dir),
                 "--top", "8000", "--control-fraction", "0.2", "--contact-cost", "5", "--offer-cost", "20",
                 "--save-rate", "0.3", "--seed", "4"]) == 0  # fmt: skip
    calls = pd.read_csv(plan_dir / "call_list.csv")
    outcomes = draw_outcomes(calls, seed=5)
    dropped = outcomes.sample(37, random_state=0).index  # outcomes lost for 37 listed customers
    kept = outcomes.drop(dropped)
    extra = pd.DataFrame({"customer_id": ["STRANGER"], "churned": [0]})
    pd.concat([kept, extra]).to_csv(tmp_path / "outcomes.csv", index=False)
    capsys.readouterr()

    assert main(["campaign-report", "--plan", str(plan_dir), "--outcomes", str(tmp_path / "outcomes.csv"),
                 "--output", str(report_dir)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    report = json.loads((report_dir / "report.json").read_text())

    known = calls.drop(dropped).merge(kept, on="customer_id")
    contacted, control = known[known.group == "contact"], known[known.group == "control"]
    observed = control.churned.mean() - contacted.churned.mean()
    assert report["contacted"]["customers"] == len(contacted) and report["control"]["customers"] == len(control)
    assert report["contacted"]["churned"] == contacted.churned.sum()
    missing = calls.loc[dropped].group.value_counts()
    assert report["contacted"]["missing_outcome"] == missing.get("contact", 0)
    assert report["control"]["missing_outcome"] == missing.get("control", 0)
    assert report["contacted"]["missing_outcome"] + report["control"]["missing_outcome"] == 37
    assert report["outcomes_not_on_the_list"] == 1
    effect = report["effect"]
    assert effect["churn_rate_reduction"] == pytest.approx(observed, abs=1e-12)
    low, high = effect["ci95"]
    assert low <= TRUE_REDUCTION <= high and high - low < 0.06, effect
    # what the simulation really saved: each contacted customer's churn probability fell by TRUE_REDUCTION
    saved = effect["customers_saved"]
    assert saved["estimate"] == pytest.approx(observed * len(contacted))
    assert saved["ci95"][0] <= TRUE_REDUCTION * len(contacted) <= saved["ci95"][1]
    value = (contacted.value_at_risk / contacted.probability).mean()
    net = effect["net_saving"]
    assert net["estimate"] == pytest.approx(saved["estimate"] * (value - 20) - 5 * len(contacted))
    assert net["ci95"][0] < net["estimate"] < net["ci95"][1]
    plan = json.loads((plan_dir / "plan.json").read_text())
    assert report["planned"]["net_saving"] == plan["expected_net_saving"]
    assert report["planned"]["contacted"] == 8000 and report["planned"]["control"] == plan["control"]
    deciles = report["by_risk_decile"]
    assert len(deciles) == 10 and sum(d["contacted"]["customers"] for d in deciles) == len(contacted)
    assert sum(d["control"]["customers"] for d in deciles) == len(control)
    assert "37 customers on the list have no outcome" in printed and "Newcombe" in printed
    assert f"{100 * observed:+.2f} pts" in printed
    page = (report_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<script" not in page and "http" not in page
    for chart in ("churn_by_group.png", "reduction_by_decile.png"):
        assert (report_dir / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_outcomes_and_plans_are_one_line_errors(tmp_path, capsys):
    write_scores(tmp_path / "scores.parquet", 300, seed=2)
    plan_dir = tmp_path / "plan"
    assert main(["plan", "--scores", str(tmp_path / "scores.parquet"), "--output", str(plan_dir),
                 "--top", "50", "--contact-cost", "5", "--offer-cost", "20", "--save-rate", "0.3"]) == 0  # fmt: skip
    ids = pd.read_csv(plan_dir / "call_list.csv").customer_id
    cases = {
        "churned: expected 0 or 1, got '2'": pd.DataFrame({"customer_id": ids, "churned": [2] * len(ids)}),
        "required column(s) 'churned' not in the table": pd.DataFrame({"customer_id": ids, "churn": 0}),
        "appears twice with different churned values": pd.DataFrame(
            {"customer_id": [ids[0], ids[0]], "churned": [0, 1]}
        ),
    }
    for message, frame in cases.items():
        frame.to_csv(tmp_path / "outcomes.csv", index=False)
        capsys.readouterr()
        code = main(["campaign-report", "--plan", str(plan_dir), "--outcomes", str(tmp_path / "outcomes.csv"),
                     "--output", str(tmp_path / "report")])  # fmt: skip
        error = capsys.readouterr().err
        assert code == 2 and message in error and error.count("\n") == 1, error
    code = main(["campaign-report", "--plan", str(tmp_path), "--outcomes", str(tmp_path / "outcomes.csv"),
                 "--output", str(tmp_path / "report")])  # fmt: skip
    error = capsys.readouterr().err
    assert code == 2 and "no readable plan.json" in error and error.count("\n") == 1, error


def test_campaign_pipeline_compiles_and_runs_through_kfp_local(tmp_path):
    import yaml

    from churnflow.pipelines.campaign_pipeline import run_campaign_report_local

    output = tmp_path / "campaign.yaml"
    done = subprocess.run([CHURNFLOW, "compile", "--pipeline", "campaign", "--output", str(output)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    spec = yaml.safe_load(output.read_text())
    assert spec["pipelineInfo"]["name"] == "churnflow-campaign-report"
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {"plan_uri", "outcomes_uri"}
    task = spec["root"]["dag"]["tasks"]["campaign-report-op"]
    assert task["cachingOptions"] == {}  # caching off: outcomes tables are rewritten in place
    executor = spec["deploymentSpec"]["executors"]["exec-campaign-report-op"]["container"]
    assert executor["resources"]["memoryLimit"]

    write_scores(tmp_path / "scores.parquet", 3000, seed=3)
    plan_dir = tmp_path / "plan"
    assert main(["plan", "--scores", str(tmp_path / "scores.parquet"), "--output", str(plan_dir),
                 "--top", "1000", "--control-fraction", "0.2", "--contact-cost", "5", "--offer-cost", "20",
                 "--save-rate", "0.3"]) == 0  # fmt: skip
    outcomes = draw_outcomes(pd.read_csv(plan_dir / "call_list.csv"), seed=6)
    outcomes.to_parquet(tmp_path / "outcomes.parquet", index=False)
    expected_dir = tmp_path / "expected"
    main(["campaign-report", "--plan", str(plan_dir), "--outcomes", str(tmp_path / "outcomes.parquet"),
          "--output", str(expected_dir)])  # fmt: skip
    expected = json.loads((expected_dir / "report.json").read_text())

    task_dir = run_campaign_report_local(
        tmp_path / "run", plan_uri=str(plan_dir), outcomes_uri=str(tmp_path / "outcomes.parquet")
    )
    executor_output = json.loads((task_dir / "executor_output.json").read_text())
    metrics = executor_output["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert metrics["churn_rate_reduction"] == pytest.approx(expected["effect"]["churn_rate_reduction"])
    assert metrics["missing_outcomes"] == 0
    report = json.loads(next(p for p in task_dir.rglob("report.json")).read_text())
    assert report == expected
    page = next(p for p in task_dir.rglob("report") if p.is_file()).read_text()
    assert "Campaign report" in page and page.count("data:image/png;base64,") == 2


def chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(binary).exists():
        pytest.fail("chromium is not installed: apt-get install -y --no-install-recommends chromium")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}"]  # fmt: skip
    return subprocess.run([binary, *flags, *arguments], capture_output=True, text=True, timeout=120)


def test_browser_renders_the_report(tmp_path):
    write_scores(tmp_path / "scores.parquet", 2000, seed=4)
    plan_dir, report_dir = tmp_path / "plan", tmp_path / "report"
    assert main(["plan", "--scores", str(tmp_path / "scores.parquet"), "--output", str(plan_dir),
                 "--top", "600", "--control-fraction", "0.2", "--contact-cost", "5", "--offer-cost", "20",
                 "--save-rate", "0.3"]) == 0  # fmt: skip
    draw_outcomes(pd.read_csv(plan_dir / "call_list.csv"), seed=7).to_csv(tmp_path / "outcomes.csv", index=False)
    assert main(["campaign-report", "--plan", str(plan_dir), "--outcomes", str(tmp_path / "outcomes.csv"),
                 "--output", str(report_dir)]) == 0  # fmt: skip
    page = (report_dir / "report.html").as_uri()
    dom = chromium("--dump-dom", page, profile=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Churn rate reduction" in dom.stdout and dom.stdout.count("<img") == 2 and "<tr>" in dom.stdout
    shot = tmp_path / "report.png"
    done = chromium(f"--screenshot={shot}", "--window-size=1200,1600", page, profile=tmp_path / "profile-shot")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int64)
    # the charts were decoded and drawn: the contacted bar's blue (#1f77b4) covers a visible area
    blue = (np.abs(pixels - np.array([0x1F, 0x77, 0xB4])).sum(axis=2) < 30).sum()
    assert blue > 5000, blue
