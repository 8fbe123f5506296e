"""The scoring pipeline's steps as plain functions: list shards, score one, merge them, report.

A shard is one file of the customer table (a Parquet part or a CSV file); each is scored by
`churnflow.scoring.bulk.score_table`, exactly as `churnflow score` does, and the merge joins the shards'
ranked outputs with the same k-way merge, so a sharded run ranks the base as one process would.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from churnflow.campaigns.plan import Campaign, make_plan
from churnflow.core.config import parse_config_text
from churnflow.core.errors import ChurnflowError
from churnflow.core.storage import filesystem
from churnflow.scoring.bulk import TableSink, _format_of, score_table
from churnflow.scoring.ranking import merge_runs

RISK_BANDS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0000001)


def list_shards(data_uri: str, max_shards: int = 0) -> list[str]:
    """The table's files as URIs, one shard each (groups of files when there are more than max_shards)."""
    fs, path = filesystem(data_uri)
    if fs.isfile(path):
        return [data_uri]
    if not fs.isdir(path):
        raise ChurnflowError(f"data {data_uri}: no such file or directory")
    names = sorted(n for n in fs.find(path) if not Path(n).name.startswith(("_", ".")))
    kind = _format_of(names, data_uri)
    names = [n for n in names if _format_of([n], data_uri) == kind]
    scheme = data_uri.split("://", 1)[0] + "://" if "://" in data_uri else ""
    uris = [scheme + n if scheme and scheme != "file://" else ("file://" + n if scheme else n) for n in names]
    if max_shards and len(uris) > max_shards:
        groups = np.array_split(np.array(uris, dtype=object), max_shards)
        return [json.dumps(list(group)) for group in groups]
    return uris


def score_shard(
    model_uri: str, shard: str, dataset_config: str, scores_path: str, rejects_path: str, batch_rows: int
) -> dict[str, Any]:
    """Scores one shard (a file URI, or a JSON list of them) into a ranked Parquet file and its rejects."""
    config = parse_config_text(dataset_config, "dataset_config") if dataset_config else None
    uris = json.loads(shard) if shard.startswith("[") else [shard]
    summaries = []
    parts = []
    for index, uri in enumerate(uris):
        part = scores_path if len(uris) == 1 else f"{scores_path}.part{index}"
        part_rejects = rejects_path if len(uris) == 1 else f"{rejects_path}.part{index}"
        summaries.append(
            score_table(
                model_uri, uri, part, config=config, batch_rows=batch_rows, rejects=part_rejects, progress=False
            )
        )
        parts.append((part, part_rejects))
    if len(uris) > 1:
        _merge_files([p for p, _ in parts], scores_path, "parquet")
        _concat_csv([r for _, r in parts], rejects_path)
        for part, part_rejects in parts:
            Path(part).unlink()
            Path(part_rejects).unlink()
    total = summaries[0].to_json()
    for other in summaries[1:]:
        for key in ("rows_read", "rows_scored", "rows_rejected", "total_value_at_risk", "predicted_churners"):
            total[key] += other.to_json()[key]
    total["shard"] = shard
    return total


def _merge_files(paths: list[str], output: str, fmt: str) -> int:
    sink = TableSink(output, fmt)
    try:
        rows = merge_runs(paths, sink.write)
    finally:
        sink.close(pq.read_schema(paths[0]) if paths else None)
    return rows


def _concat_csv(paths: list[str], output: str) -> int:
    tables = [pacsv.read_csv(p) for p in paths if Path(p).stat().st_size]
    tables = [t for t in tables if t.num_rows] or tables[:1]
    if not tables:
        Path(output).write_text("")
        return 0
    table = pa.concat_tables(tables, promote_options="permissive")
    pacsv.write_csv(table, output)
    return table.num_rows


def merge_shards(
    score_paths: list[str],
    reject_paths: list[str],
    summaries: list[dict[str, Any]],
    merged_path: str,
    merged_rejects_path: str,
    campaign: Campaign,
    output_uri: str = "",
) -> dict[str, Any]:
    """Joins the shards' ranked scores into one ranked table; returns the totals and the plan headline."""
    rows = _merge_files(score_paths, merged_path, "parquet")
    rejected = _concat_csv(reject_paths, merged_rejects_path)
    if output_uri:
        fs, path = filesystem(output_uri, "output")
        fs.put(merged_path, path)
    scores = pq.read_table(merged_path)
    id_column = scores.schema.names[0]
    plan = make_plan(scores, id_column, campaign)
    totals = {
        "shards": len(score_paths),
        "rows": rows,
        "rejects": rejected,
        "total_value_at_risk": float(sum(s["total_value_at_risk"] for s in summaries)),
        "predicted_churners": int(sum(s["predicted_churners"] for s in summaries)),
        "expected_saving": plan.expected_saving,
        "contacted": plan.contacted,
        "value_note": summaries[0]["value_note"] if summaries else "",
    }
    totals["bands"] = risk_bands(scores)
    totals["_plan"] = plan
    return totals


def risk_bands(scores: pa.Table) -> list[dict[str, Any]]:
    probability = scores.column("probability").to_numpy()
    value = scores.column("value_at_risk").to_numpy()
    band = np.digitize(probability, RISK_BANDS[1:-1])
    out = []
    for index in range(len(RISK_BANDS) - 1):
        mask = band == index
        out.append(
            {
                "band": f"{RISK_BANDS[index]:.1f}–{min(RISK_BANDS[index + 1], 1.0):.1f}",
                "customers": int(mask.sum()),
                "value_at_risk": float(value[mask].sum()),
            }
        )
    return out


def report_html(totals: dict[str, Any], path: str) -> None:
    """The run's report for the Kubeflow UI: totals, risk distribution, value at risk by band, curves."""
    from churnflow.campaigns.plan import plot

    plan = totals["_plan"]
    with tempfile.TemporaryDirectory() as directory:
        charts = plot(plan, Path(directory))
        images = "".join(
            f'<figure><img alt="{name}" src="data:image/png;base64,'
            f'{base64.b64encode(Path(file).read_bytes()).decode()}"/></figure>'
            for name, file in charts.items()
        )
    rows = "".join(
        f"<tr><td>{html.escape(b['band'])}</td><td>{b['customers']:,}</td><td>{b['value_at_risk']:,.2f}</td></tr>"
        for b in totals["bands"]
    )
    Path(path).write_text(
        "<html><head><meta charset='utf-8'><title>churnflow scoring</title></head><body>"
        "<h1>Scoring run</h1>"
        f"<p>{totals['rows']:,} customers scored in {totals['shards']} shards; {totals['rejects']:,} rejected rows; "
        f"{totals['predicted_churners']:,} predicted to churn.</p>"
        f"<p>Total value at risk {totals['total_value_at_risk']:,.2f} ({html.escape(totals['value_note'])}).</p>"
        f"<p>Expected net saving of the planned campaign: {totals['expected_saving']:,.2f} "
        f"({totals['contacted']:,} customers contacted).</p>"
        "<h2>Risk distribution and value at risk by risk band</h2>"
        "<table border='1' cellpadding='4'><tr><th>churn probability</th><th>customers</th>"
        f"<th>value at risk</th></tr>{rows}</table>"
        f"<h2>Curves</h2>{images}</body></html>"
    )
