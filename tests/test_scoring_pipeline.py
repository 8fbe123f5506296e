"""Issue 15 item 5: the scoring pipeline through kfp.local on the model `churnflow run` released."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churnflow.core.config import config_to_json, load_config
from churnflow.core.synthetic import synthetic_customers
from churnflow.pipelines.local import run_local
from churnflow.pipelines.scoring_pipeline import run_scoring_local
from churnflow.scoring.bulk import score_table

CONFIG = """\
id: customer_id
target: churn
numeric: [tenure, usage, age, monthly_charges]
categorical: [contract_type]
value: {column: monthly_charges, horizon_months: 12}
"""


@pytest.mark.slow
def test_scoring_pipeline_ranks_200k_rows_as_one_process_would(tmp_path):
    (tmp_path / "dataset.yaml").write_text(CONFIG)
    config = load_config(tmp_path / "dataset.yaml")
    released = run_local(tmp_path / "run", config=config, rows=2000, arguments={"tune": False, "n_estimators": 30})
    assert released.deployed
    model = tmp_path / "run" / "model"

    frame = synthetic_customers(200_000, seed=9).astype({"tenure": str})
    frame.loc[[5, 150_001], "tenure"] = "unknown"  # two rejects, in different shards
    base = tmp_path / "base"
    base.mkdir()
    for part in range(4):
        chunk = frame.iloc[part * 50_000 : (part + 1) * 50_000]
        pq.write_table(pa.Table.from_pandas(chunk, preserve_index=False), base / f"part-{part}.parquet")

    handlers = list(logging.root.handlers)
    result = run_scoring_local(
        tmp_path / "scoring",
        model_uri=str(model),
        data_uri=str(base),
        dataset_config=config_to_json(config),
        top=500,
        contact_cost=2.0,
        offer_cost=10.0,
        save_rate=0.3,
    )
    assert logging.root.handlers == handlers  # kfp.local's loop threads leave none behind
    assert result.metrics["shards"] == 4
    assert result.metrics["rows"] == 199_998 and result.metrics["rejects"] == 2
    merged = pq.read_table(result.scores)
    single = tmp_path / "single.parquet"
    summary = score_table(str(model), str(base), str(single), config=config)
    one = pq.read_table(single)
    assert merged.column("customer_id").equals(one.column("customer_id"))
    assert np.array_equal(merged.column("probability").to_numpy(), one.column("probability").to_numpy())
    assert merged.column("rank").to_pylist() == list(range(1, 199_999))
    assert result.metrics["total_value_at_risk"] == pytest.approx(summary.total_value_at_risk, rel=1e-12)
    calls = result.call_list.read_text().splitlines()
    assert len(calls) == 1 + 556  # header, 500 contacted and their 10% control group
    assert '"reason_1"' in calls[0] and "(+0." in calls[1]
    report = result.report.read_text()
    assert "Risk distribution" in report and report.count("data:image/png;base64,") == 2


def test_compiled_scoring_pipeline_bounds_parallelism_and_requests_resources(tmp_path):
    import subprocess

    import yaml

    from .conftest import CHURNFLOW

    output = tmp_path / "scoring.yaml"
    done = subprocess.run(
        [CHURNFLOW, "compile", "--pipeline", "scoring", "--parallelism", "3", "--output", str(output)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    spec = yaml.safe_load(output.read_text())
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == 4
    for name, executor in executors.items():
        resources = executor["container"]["resources"]
        for key in ("cpuRequest", "cpuLimit", "memoryRequest", "memoryLimit"):
            assert resources.get(key), (name, key)
    tasks = spec["root"]["dag"]["tasks"]
    loop = next(task for name, task in tasks.items() if name.startswith("for-loop"))
    assert loop["iteratorPolicy"]["parallelismLimit"] == 3
    assert "list-shards-op" in loop["dependentTasks"]
    assert tasks["merge-scores-op"]["dependentTasks"] == [next(n for n in tasks if n.startswith("for-loop"))]
    assert tasks["plan-op"]["dependentTasks"] == ["merge-scores-op"]
    refused = subprocess.run(
        [CHURNFLOW, "compile", "--pipeline", "scoring", "--parallelism", "0", "--output", str(output)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (
        refused.returncode == 2
        and refused.stderr.strip() == "churnflow: error: --parallelism: expected at least 1, got 0"
    )
