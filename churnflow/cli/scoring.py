"""`churnflow score`: scoring the whole customer base in bulk."""

from __future__ import annotations

import argparse


def _cmd_score(args: argparse.Namespace) -> int:
    import logging

    from churnflow.core.config import load_config
    from churnflow.scoring.bulk import rejects_uri, score_table

    logging.basicConfig(level=logging.INFO, format="churnflow: %(message)s")
    output = args.output or f"scores.{args.format}"
    summary = score_table(
        args.model_dir,
        args.data,
        output,
        config=load_config(args.config),
        fmt=args.format,
        batch_rows=args.batch_rows,
        rejects=args.rejects or rejects_uri(output),
        threads=args.threads,
    )
    rate = summary.rows_read / max(summary.seconds, 1e-9)
    print(
        f"churnflow: scored {summary.rows_scored} of {summary.rows_read} rows in {summary.seconds:.1f} s "
        f"({rate:,.0f} rows/s, {summary.evaluator}) → {summary.output}"
    )
    if summary.rows_rejected:
        reasons = ", ".join(f"{field}: {count}" for field, count in summary.reject_reasons.most_common(5))
        print(f"  rejected {summary.rows_rejected} rows ({reasons}) → {summary.rejects}")
    else:
        print("  rejected 0 rows")
    for kind, counts in (("unseen", summary.unseen), ("missing", summary.missing)):
        if counts:
            detail = ", ".join(f"{column}: {count}" for column, count in counts.items())
            print(f"  {kind} category levels read as all-zero ({detail})")
    if summary.filled:
        detail = ", ".join(f"{column}: {count}" for column, count in summary.filled.items())
        print(f"  filled blank numbers with the training median ({detail})")
    print(f"  {summary.value_note}; total value at risk {summary.total_value_at_risk:,.2f}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Adds score to the `churnflow` parser."""
    score = sub.add_parser("score", help="score a whole customer table (CSV or Parquet) in bulk")
    score.add_argument("--model-dir", required=True, help="released model directory or URI (s3://, minio://, gs://)")
    score.add_argument(
        "--data", required=True, help="CSV or Parquet file, directory or prefix: path, file://, s3://, minio://, gs://"
    )
    score.add_argument("--output", help="scores file or URI (default: scores.parquet or scores.csv)")
    score.add_argument("--format", choices=["parquet", "csv"], default="parquet", help="output format")
    score.add_argument("--batch-rows", type=int, default=200_000, help="rows per batch: bounds memory (default 200000)")
    score.add_argument("--config", help="dataset config: id column and value for value at risk (default: built-in)")
    score.add_argument("--rejects", help="rejects CSV (default: beside the output, NAME.rejects.csv)")
    score.add_argument(
        "--threads",
        type=int,
        help="threads one scoring call uses (default: every core this process may use); reading and writing "
        "overlap with scoring in two more threads",
    )
    score.set_defaults(func=_cmd_score)
