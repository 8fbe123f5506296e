"""Issue 15: `churnflow score` — equality with the predictor, rejects, ranking, object storage."""

from __future__ import annotations

import os
import re
import subprocess

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churnflow.core.config import load_config
from churnflow.core.errors import ChurnflowError
from churnflow.core.synthetic import synthetic_customers
from churnflow.scoring.bulk import score_table
from churnflow.scoring.ranking import merge_runs, sort_run

from .conftest import CHURNFLOW

VALUE_CONFIG = """\
id: customer_id
target: churn
numeric: [tenure, usage, age, monthly_charges]
categorical: [contract_type]
value: {column: monthly_charges, horizon_months: 12}
"""


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "dataset.yaml"
    path.write_text(VALUE_CONFIG)
    return path


def sample_table(rows: int = 400, seed: int = 3) -> pd.DataFrame:
    """Synthetic customers as text cells, with blanks (empty, whitespace) and unseen or odd levels."""
    frame = synthetic_customers(rows, seed).astype(str)
    rng = np.random.default_rng(seed)
    for column in ("tenure", "usage", "age"):
        frame.loc[rng.random(rows) < 0.08, column] = ""
        frame.loc[rng.random(rows) < 0.04, column] = "  "
    odd = rng.random(rows)
    frame.loc[odd < 0.06, "contract_type"] = "Weekly"  # unseen in training
    frame.loc[(odd >= 0.06) & (odd < 0.1), "contract_type"] = ""  # missing
    frame.loc[(odd >= 0.1) & (odd < 0.13), "contract_type"] = " One year "  # normalised like serving
    frame["plan"] = "gold"  # a column the model does not read
    return frame


def served_instances(frame: pd.DataFrame) -> list[dict]:
    """The table's rows as v1 instances (blank numbers sent as JSON null)."""
    instances = []
    for record in frame.to_dict("records"):
        row = {}
        for column in ("tenure", "usage", "age", "monthly_charges"):
            text = record[column].strip()
            row[column] = float(text) if text else None
        row["contract_type"] = record["contract_type"]
        instances.append(row)
    return instances


def served(server, frame: pd.DataFrame) -> np.ndarray:
    """What `churnflow serve` answers for these rows."""
    instances = served_instances(frame)
    answer = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": instances}, timeout=30)
    assert answer.status_code == 200, answer.text
    return np.array([p["probability"] for p in answer.json()["predictions"]])


@pytest.mark.slow
def test_scores_equal_the_predictor_from_csv_and_parquet(server, model_dir, config_path, tmp_path):
    frame = sample_table()
    expected = served(server, frame)
    csv = tmp_path / "base.csv"
    frame.to_csv(csv, index=False)
    parquet_dir = tmp_path / "parquet"
    parquet_dir.mkdir()
    for part, chunk in enumerate([frame.iloc[i::3] for i in range(3)]):
        pq.write_table(pa.Table.from_pandas(chunk, preserve_index=False), parquet_dir / f"part-{part}.parquet")
    config = load_config(config_path)
    monthly = frame.set_index("customer_id")["monthly_charges"].astype(float)
    for source in (csv, parquet_dir):
        output = tmp_path / f"scores-{source.name}.parquet"
        summary = score_table(str(model_dir), str(source), str(output), config=config, batch_rows=57)
        assert summary.rows_read == summary.rows_scored == len(frame)
        assert summary.unseen["contract_type"] == int((frame.contract_type == "Weekly").sum())
        assert summary.missing["contract_type"] == int((frame.contract_type == "").sum())
        scores = pq.read_table(output).to_pandas().set_index("customer_id").loc[frame.customer_id]
        difference = np.abs(scores["probability"].to_numpy() - expected)
        assert difference.max() <= 1e-12, difference.max()
        assert np.allclose(scores["value_at_risk"], scores["probability"] * monthly.loc[scores.index] * 12, rtol=1e-12)
        ranked = scores.sort_values("rank")
        assert ranked["rank"].tolist() == list(range(1, len(frame) + 1))
        assert ranked["value_at_risk"].is_monotonic_decreasing


def test_bad_rows_go_to_rejects_with_id_and_reason(model_dir, config_path, tmp_path):
    frame = sample_table(60, seed=5)
    frame.loc[3, "tenure"] = "twelve"
    frame.loc[7, "usage"] = "inf"
    frame.loc[9, "age"] = "1e300"
    frame.loc[11, "contract_type"] = '=HYPERLINK("http://x")'
    frame.loc[13, "monthly_charges"] = ""  # the value column: value at risk cannot be computed
    source = tmp_path / "base.csv"
    frame.to_csv(source, index=False)
    output = tmp_path / "scores.csv"
    result = subprocess.run(
        [CHURNFLOW, "score", "--model-dir", str(model_dir), "--data", str(source), "--output", str(output),
         "--format", "csv", "--config", str(config_path), "--batch-rows", "16"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "rejected 5 rows" in result.stdout
    rejects = pd.read_csv(tmp_path / "scores.rejects.csv").set_index("row")
    assert sorted(rejects.index) == [3, 7, 9, 11, 13]
    assert rejects.loc[3, "customer_id"] == frame.loc[3, "customer_id"]
    assert rejects.loc[3, "field"] == "tenure" and "expected a number, got 'twelve'" in rejects.loc[3, "reason"]
    assert "finite" in rejects.loc[7, "reason"] and "out of range" in rejects.loc[9, "reason"]
    assert "formula" in rejects.loc[11, "reason"] and rejects.loc[13, "field"] == "monthly_charges"
    scores = pd.read_csv(output)
    assert len(scores) == 55 and not set(scores.customer_id) & set(rejects.customer_id)


def test_strict_contract_rejects_unseen_and_missing_levels(tmp_path, config_path):
    from .conftest import build_model

    strict_model = build_model(tmp_path / "strict", rows=600, trees=5, strict_categories=True)
    frame = sample_table(80, seed=8)
    source = tmp_path / "base.csv"
    frame.to_csv(source, index=False)
    summary = score_table(str(strict_model), str(source), str(tmp_path / "s.parquet"), config=load_config(config_path))
    bad = int(frame.contract_type.isin(["Weekly", ""]).sum())
    assert bad and summary.rows_rejected == bad and summary.rows_scored == len(frame) - bad
    reasons = pd.read_csv(tmp_path / "s.rejects.csv")["reason"]
    assert reasons.str.contains("unseen category 'Weekly'").any()
    assert reasons.str.contains("missing required field 'contract_type'").any()


def test_whole_table_problems_fail_with_one_line(model_dir, tmp_path):
    frame = sample_table(20).drop(columns=["usage"])
    frame.to_csv(tmp_path / "no_usage.csv", index=False)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    (tmp_path / "notes.txt").write_text("hello")
    cases = {
        "no_usage.csv": "required column(s) 'usage' not in the table",
        "broken.parquet": "not a readable parquet table",
        "notes.txt": "expected CSV (.csv) or Parquet (.parquet) files",
        "absent.csv": "no such file or directory",
    }
    for name, message in cases.items():
        result = subprocess.run(
            [CHURNFLOW, "score", "--model-dir", str(model_dir), "--data", str(tmp_path / name),
             "--output", str(tmp_path / "out.parquet")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 2, (name, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("churnflow: error: ") and message in lines[0], lines


def test_merge_ranks_like_a_full_sort_with_ties(tmp_path):
    rng = np.random.default_rng(0)
    values = np.round(rng.exponential(3, 5000), 0)  # a few distinct values: ties span chunks and runs
    ids = np.arange(len(values))
    runs = []
    for index, chunk in enumerate(np.array_split(np.arange(len(values)), 7)):
        path = tmp_path / f"run-{index}.parquet"
        pq.write_table(sort_run(pa.table({"row": ids[chunk], "value_at_risk": values[chunk]})), path)
        runs.append(path)
    parts: list[pa.Table] = []
    written = merge_runs(runs, parts.append, chunk_rows=700)  # 100 rows of each run at a time
    merged = pa.concat_tables(parts)
    order = np.lexsort((ids, -values))  # highest value first, input order among equals
    assert written == len(values)
    assert merged.column("row").to_numpy().tolist() == ids[order].tolist()
    assert merged.column("rank").to_numpy().tolist() == list(range(1, len(values) + 1))


def test_value_defaults_to_one_and_says_so(model_dir, tmp_path):
    frame = sample_table(30)
    frame.to_csv(tmp_path / "base.csv", index=False)
    summary = score_table(str(model_dir), str(tmp_path / "base.csv"), str(tmp_path / "s.parquet"))
    scores = pq.read_table(tmp_path / "s.parquet").to_pandas()
    assert "value = probability × 1" in summary.value_note or "probability × 1" in summary.value_note
    assert np.array_equal(scores["value_at_risk"], scores["probability"])
    assert sorted(scores["row"]) == list(range(30))  # no id column in the default config: input rows
    with pytest.raises(ChurnflowError, match="--format"):
        score_table(str(model_dir), str(tmp_path / "base.csv"), str(tmp_path / "s.x"), fmt="xlsx")


@pytest.mark.slow
def test_score_reads_and_writes_object_storage(s3_server, model_dir, config_path, tmp_path):
    client = s3_server.client()
    client.create_bucket(Bucket="base")
    client.create_bucket(Bucket="models")
    frame = sample_table(300, seed=11)
    (tmp_path / "parts").mkdir()
    for part, chunk in enumerate([frame.iloc[i::2] for i in range(2)]):
        path = tmp_path / "parts" / f"part-{part}.parquet"
        pq.write_table(pa.Table.from_pandas(chunk, preserve_index=False), path)
        client.upload_file(str(path), "base", f"customers/2026-11/part-{part}.parquet")
    for file in model_dir.iterdir():
        client.upload_file(str(file), "models", f"churn/v1/{file.name}")
    local = tmp_path / "local.parquet"
    score_table(str(model_dir), str(tmp_path / "parts"), str(local), config=load_config(config_path))
    result = subprocess.run(
        [CHURNFLOW, "score", "--model-dir", "s3://models/churn/v1", "--data", "s3://base/customers/2026-11/",
         "--output", "minio://base/scores/2026-11.parquet", "--config", str(config_path)],
        capture_output=True, text=True, timeout=180,
        env={**os.environ, **s3_server.env(), "MINIO_ENDPOINT_URL": s3_server.endpoint},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    downloaded = tmp_path / "remote.parquet"
    client.download_file("base", "scores/2026-11.parquet", str(downloaded))
    remote = pq.read_table(downloaded).to_pandas()
    assert remote.equals(pq.read_table(local).to_pandas())
    listing = client.list_objects_v2(Bucket="base", Prefix="scores/")["Contents"]
    assert {item["Key"] for item in listing} == {"scores/2026-11.parquet", "scores/2026-11.rejects.csv"}


def test_value_section_of_the_dataset_config_is_strict():
    from churnflow.core.config import parse_config

    base = {"target": "churn", "numeric": ["tenure", "monthly_charges"], "categorical": ["plan"]}
    value = parse_config({**base, "value": {"column": "monthly_charges", "horizon_months": 12}}).value
    assert value.column == "monthly_charges" and value.horizon_months == 12
    assert parse_config({**base, "value": {"constant": 250}}).value.constant == 250
    bad = {
        "value: give exactly one of column (with horizon_months) or constant": {"column": "a", "constant": 1},
        "unknown key 'value.months' (expected one of: column, horizon_months, constant)": {"months": 3},
        "value.horizon_months: Input should be greater than 0": {"column": "monthly_charges", "horizon_months": 0},
        "value column 'churn' is the target or id column": {"column": "churn"},
    }
    for message, section in bad.items():
        with pytest.raises(ChurnflowError, match=re.escape(message)):
            parse_config({**base, "value": section})


@pytest.mark.slow
def test_plan_call_list_carries_the_reasons_explain_gives(server, model_dir, config_path, tmp_path):
    frame = sample_table(200, seed=21)
    source = tmp_path / "base.csv"
    frame.to_csv(source, index=False)
    score_table(str(model_dir), str(source), str(tmp_path / "s.parquet"), config=load_config(config_path))
    result = subprocess.run(
        [CHURNFLOW, "plan", "--scores", str(tmp_path / "s.parquet"), "--output", str(tmp_path / "plan"),
         "--top", "20", "--contact-cost", "2", "--offer-cost", "10", "--save-rate", "0.3", "--seed", "1",
         "--model-dir", str(model_dir), "--data", str(source), "--config", str(config_path)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "expected net saving = save_rate × value_at_risk − contact_cost − save_rate × offer_cost" in result.stdout
    assert "expected net saving of the contacted list" in result.stdout
    calls = pd.read_csv(tmp_path / "plan" / "call_list.csv", keep_default_na=False)
    assert (calls.group == "contact").sum() == 20 and (calls.group == "control").sum() == 3  # 23 × 10% ≈ 3
    for name in ("expected_saving.png", "cumulative_gains.png"):
        assert (tmp_path / "plan" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    listed = frame.set_index("customer_id").loc[calls.customer_id]
    explained = httpx.post(
        f"{server.url}/v1/models/churn:explain",
        json={"instances": served_instances(listed.reset_index())},
        timeout=60,
    ).json()["explanations"]
    for (_, call), answer in zip(calls.iterrows(), explained, strict=True):
        expected = [f"{column}=" for column, _ in answer["top_increasing"][:3]]
        got = [call[f"reason_{k}"] for k in (1, 2, 3) if call[f"reason_{k}"]]
        assert [g.split("=")[0] + "=" for g in got] == expected
        assert all(g.endswith(" churn probability)") for g in got)  # the reasons' unit
        pushes = [float(g.rsplit("(+", 1)[1].split()[0]) for g in got]
        assert pushes == pytest.approx([round(v, 3) for _, v in answer["top_increasing"][:3]], abs=1e-3)


def test_score_counts_the_blanks_it_filled_and_suggests_a_misspelt_column(model_dir, tmp_path):
    frame = sample_table(60)
    frame.to_csv(tmp_path / "blanks.csv", index=False)
    summary = score_table(str(model_dir), str(tmp_path / "blanks.csv"), str(tmp_path / "s.parquet"))
    expected = {c: int(frame[c].str.strip().eq("").sum()) for c in ("tenure", "usage", "age")}
    assert dict(summary.filled) == {c: n for c, n in expected.items() if n} and sum(expected.values()) > 0
    assert summary.to_json()["filled_blanks"] == dict(summary.filled)
    frame.rename(columns={"usage": "Usage"}).to_csv(tmp_path / "renamed.csv", index=False)
    with pytest.raises(ChurnflowError, match="'usage': did you mean 'Usage'\\?"):
        score_table(str(model_dir), str(tmp_path / "renamed.csv"), str(tmp_path / "r.parquet"))
