"""The `churnflow` command line: run the pipeline locally, compile it, serve a model.

User errors (ChurnflowError) print one line, `churnflow: error: ...`, and exit 2; nothing else
prints a traceback unless CHURNFLOW_DEBUG=1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from churnflow.errors import ChurnflowError

Command = Callable[[argparse.Namespace], int]


def _cmd_run(args: argparse.Namespace) -> int:
    from churnflow.config import load_config
    from churnflow.pipelines.churn_pipeline import churn_training_pipeline
    from churnflow.pipelines.local import run_local
    from churnflow.pipelines.parameters import parse_assignments

    if args.rows < 10:
        raise ChurnflowError(f"--rows: expected at least 10, got {args.rows}")
    config = load_config(args.config)
    arguments = parse_assignments(args.set or [], churn_training_pipeline)
    data = args.data or ""
    if not data and Path("customer_data.csv").is_file() and args.config is None:
        data = "customer_data.csv"
    source = data or f"synthetic data ({args.rows} rows)"
    print(f"churnflow: running the pipeline locally on {source} → {args.output} (log: pipeline.log)")
    result = run_local(args.output, config=config, data_uri=data, rows=args.rows, arguments=arguments)
    m = result.metrics
    print(
        f"  roc_auc={m['roc_auc']:.4f} accuracy={m['accuracy']:.4f} precision={m['precision']:.4f} "
        f"recall={m['recall']:.4f} f1={m['f1']:.4f} brier={m['brier']:.4f}"
    )
    if result.deployed:
        print(f"  deployed model {m['model_version']} → {result.output_dir / 'model'}")
    else:
        print(f"  not deployed: {'; '.join(m['reasons'])}")
    print(f"  metrics: {result.output_dir / 'metrics.json'}")
    return 0


def _cmd_compile(args: argparse.Namespace) -> int:
    from churnflow.pipelines.kubeflow import compile_pipeline

    path = compile_pipeline(args.output, image=args.image or os.environ.get("CHURNFLOW_TRAIN_IMAGE"))
    print(f"churnflow: wrote {path}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from churnflow.synthetic import synthetic_customers

    frame = synthetic_customers(args.rows, args.seed)
    frame.to_csv(args.output, index=False)
    print(f"churnflow: wrote {len(frame)} rows to {args.output} (churn rate {frame['churn'].mean():.3f})")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from churnflow.predictor.server import serve

    serve(
        model_dir=args.model_dir,
        model_name=args.model_name,
        http_port=args.port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        max_batch=args.max_batch,
        watch_seconds=args.watch,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="churnflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the whole pipeline locally through kfp.local")
    run.add_argument(
        "--data", help="customer table: CSV path or URI (default: customer_data.csv if present, else synthetic data)"
    )
    run.add_argument("--config", help="dataset config, YAML or JSON (default: the classic churn table)")
    run.add_argument("--rows", type=int, default=1000, help="rows of synthetic data when --data is absent")
    run.add_argument("--output", default="runs/latest", help="output directory (default: runs/latest)")
    run.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="set a pipeline parameter, e.g. --set min_roc_auc=0.8 (repeatable)",
    )
    run.set_defaults(func=_cmd_run)

    comp = sub.add_parser("compile", help="compile the pipeline to KFP YAML")
    comp.add_argument("--output", default="churn_pipeline.yaml")
    comp.add_argument(
        "--image", help="train image for every component (default: $CHURNFLOW_TRAIN_IMAGE or the published tag)"
    )
    comp.set_defaults(func=_cmd_compile)

    gen = sub.add_parser("generate", help="write a synthetic customer table as CSV")
    gen.add_argument("--rows", type=int, default=1000)
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--output", default="customer_data.csv")
    gen.set_defaults(func=_cmd_generate)

    srv = sub.add_parser("serve", help="serve a model directory with KServe's ModelServer")
    srv.add_argument("--model-dir", required=True, help="model directory or storage URI (pvc://, s3://, gs://)")
    srv.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    srv.add_argument("--grpc-port", type=int, default=0, help="gRPC port (default: none)")
    srv.add_argument("--model-name", default="churn")
    srv.add_argument("--workers", type=int, default=1)
    srv.add_argument(
        "--max-batch", type=int, help="most rows one request may carry (default 10000, or $CHURNFLOW_MAX_BATCH)"
    )
    srv.add_argument(
        "--watch",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="re-load the model when its directory changes, checking every SECONDS (default: off)",
    )
    srv.set_defaults(func=_cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ChurnflowError as error:
        print(f"churnflow: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
