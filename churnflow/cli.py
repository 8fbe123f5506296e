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
        store_url=args.store,
        event_loop=args.event_loop,
    )
    return 0


def _store_url(args: argparse.Namespace) -> str:
    url = args.store or os.environ.get("CHURNFLOW_STORE_URL")
    if not url:
        raise ChurnflowError("--store: no store given (a URL such as sqlite:///predictions.db or $CHURNFLOW_STORE_URL)")
    return url


def _cmd_outcomes(args: argparse.Namespace) -> int:
    from churnflow.store.database import PredictionStore
    from churnflow.store.outcomes import read_outcomes_csv, record_outcomes

    if args.csv and (args.request_id or args.customer_id or args.churned is not None):
        raise ChurnflowError("outcomes: give either --csv FILE or --request-id/--customer-id with --churned, not both")
    if args.csv:
        rows, source = read_outcomes_csv(args.csv), f"{args.csv} row"
    elif args.churned is None or not (args.request_id or args.customer_id):
        raise ChurnflowError("outcomes: give --csv FILE, or --request-id ID (or --customer-id ID) and --churned 1|0")
    else:
        row = {"request_id": args.request_id, "customer_id": args.customer_id, "churned": args.churned}
        rows, source = [{**row, "row_index": args.row_index}], "outcome"
    store = PredictionStore(_store_url(args))
    try:
        count = record_outcomes(store, rows, source=source)
    finally:
        store.close()
    print(f"churnflow: recorded {count} outcome{'s' if count != 1 else ''} in {store.display_url}")
    return 0


DRIFT_EXIT = 3


def _cmd_drift(args: argparse.Namespace) -> int:
    import datetime as dt

    from churnflow.drift import Thresholds, run_check, summary
    from churnflow.drift_report import write_report

    since = None
    if args.since:
        try:
            since = dt.datetime.fromisoformat(args.since)
        except ValueError:
            raise ChurnflowError(
                f"--since: expected an ISO 8601 time such as 2026-05-01T00:00Z, got {args.since!r}"
            ) from None
    thresholds = Thresholds(
        psi_watch=args.psi_watch,
        psi_act=args.psi_act,
        alpha=args.alpha,
        precision_drop=args.precision_drop,
        min_rows=args.min_rows,
        min_labelled=args.min_labelled,
    )
    report = run_check(
        _store_url(args),
        args.model_dir,
        model_name=args.model_name,
        window=args.window if args.window is not None else (None if since else 10_000),
        since=since,
        any_version=args.any_version,
        evaluation_path=args.evaluation,
        thresholds=thresholds,
    )
    print(summary(report))
    if args.report:
        paths = write_report(report, args.report)
        print(f"  report: {paths['html']} ({paths['json'].name}, {paths['prom'].name})")
    return DRIFT_EXIT if report["drift"] else 0


def _pipeline_arguments(args: argparse.Namespace) -> dict:
    """--data/--config/--set as training-pipeline arguments (the config travels as JSON)."""
    from churnflow.config import config_to_json, load_config
    from churnflow.pipelines.churn_pipeline import churn_training_pipeline
    from churnflow.pipelines.parameters import parse_assignments

    arguments = parse_assignments(args.set or [], churn_training_pipeline)
    if args.data:
        arguments["data_uri"] = args.data
    if args.config:
        arguments["dataset_config"] = config_to_json(load_config(args.config))
    return arguments


def _cmd_submit(args: argparse.Namespace) -> int:
    from churnflow.pipelines.kubeflow import submit_run

    run_id = submit_run(
        args.host,
        _pipeline_arguments(args),
        namespace=args.namespace,
        experiment=args.experiment,
        run_name=args.run_name,
        image=args.image or os.environ.get("CHURNFLOW_TRAIN_IMAGE"),
    )
    print(f"churnflow: started run {run_id} in experiment {args.experiment!r} at {args.host}")
    return 0


def _cmd_upload(args: argparse.Namespace) -> int:
    from churnflow.pipelines.kubeflow import upload_pipeline

    pipeline_id = upload_pipeline(
        args.host, args.name, namespace=args.namespace, image=args.image or os.environ.get("CHURNFLOW_TRAIN_IMAGE")
    )
    print(f"churnflow: uploaded pipeline {args.name!r} as {pipeline_id} to {args.host}")
    return 0


def _cmd_schedule(args: argparse.Namespace) -> int:
    from churnflow.pipelines.kubeflow import schedule_runs

    job_id = schedule_runs(
        args.host,
        args.cron,
        _pipeline_arguments(args),
        namespace=args.namespace,
        experiment=args.experiment,
        job_name=args.name,
        image=args.image or os.environ.get("CHURNFLOW_TRAIN_IMAGE"),
    )
    print(f"churnflow: recurring run {job_id} ({args.cron!r}) in experiment {args.experiment!r} at {args.host}")
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    from churnflow.components.deploy.inferenceservice import DEFAULT_SERVE_IMAGE, render_inferenceservice, to_yaml
    from churnflow.components.deploy.kubernetes import with_canary, with_deployment_mode

    manifest = render_inferenceservice(
        name=args.name,
        namespace=args.namespace,
        storage_uri=args.model_uri,
        image=args.image or DEFAULT_SERVE_IMAGE,
        model_version=args.model_version,
    )
    with_deployment_mode(manifest, args.deployment_mode)
    if args.dry_run:  # as it would be applied: a canary's traffic share included
        print(to_yaml(with_canary(manifest, args.canary)), end="")
        return 0
    from churnflow.components.deploy.kubernetes import CanaryPolicy, apply_inferenceservice, custom_objects_api

    policy = CanaryPolicy(
        prometheus_url=args.prometheus_url,
        bake_seconds=args.canary_bake_seconds,
        max_error_ratio_increase=args.canary_max_error_ratio_increase,
        max_p99_ratio=args.canary_max_p99_ratio,
        min_requests=args.canary_min_requests,
    )
    rollout = apply_inferenceservice(
        custom_objects_api(args.kubeconfig, args.context),
        manifest,
        canary_percent=args.canary,
        timeout_seconds=args.timeout,
        canary_policy=policy,
        served_url=args.served_url,
    )
    print(f"churnflow: {rollout.action} inferenceservice {rollout.namespace}/{rollout.name}; ready at {rollout.url}")
    if rollout.canary:
        print(f"churnflow: canary promoted: {rollout.canary['reason']}")
    return 0


def _add_kubeflow_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--host", required=True, help="Kubeflow Pipelines API endpoint, e.g. http://localhost:8080")
    command.add_argument("--namespace", default="", help="Kubeflow profile namespace (multi-user clusters)")
    command.add_argument("--experiment", default="churnflow")
    command.add_argument("--image", help="train image for every component (default: $CHURNFLOW_TRAIN_IMAGE)")
    command.add_argument("--data", help="data_uri for the runs")
    command.add_argument("--config", help="dataset config file, sent as the dataset_config parameter")
    command.add_argument("--set", action="append", metavar="NAME=VALUE", help="a pipeline parameter (repeatable)")


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
    srv.add_argument(
        "--store",
        metavar="URL",
        help="log every prediction to this store: sqlite:///PATH or postgresql://... (default: $CHURNFLOW_STORE_URL)",
    )
    srv.add_argument(
        "--event-loop",
        choices=["auto", "asyncio", "uvloop"],
        default="asyncio",
        help="the server's event loop (default asyncio; auto or uvloop: more throughput under overload, but "
        "new connections can wait seconds; see the README)",
    )
    srv.set_defaults(func=_cmd_serve)

    out = sub.add_parser("outcomes", help="record ground truth (who really churned) in the prediction store")
    out.add_argument("--store", metavar="URL", help="the prediction store (default: $CHURNFLOW_STORE_URL)")
    out.add_argument("--csv", help="CSV with churned and request_id (optionally row_index) or customer_id columns")
    out.add_argument("--request-id", help="the request the outcome settles")
    out.add_argument("--row-index", type=int, help="the row within that request (default: every row)")
    out.add_argument("--customer-id", help="the customer the outcome settles (their latest prediction)")
    out.add_argument("--churned", help="1/0, true/false or yes/no")
    out.set_defaults(func=_cmd_outcomes)

    drift = sub.add_parser(
        "drift",
        help="check logged predictions for data, prediction and accuracy drift (exit 3 on drift)",
        description="Exit status: 0 no drift, 3 drift, 2 an error in the input.",
    )
    drift.add_argument("--store", metavar="URL", help="the prediction store (default: $CHURNFLOW_STORE_URL)")
    drift.add_argument("--model-dir", required=True, help="the deployed model's directory")
    drift.add_argument("--model-name", default="churn")
    window = drift.add_mutually_exclusive_group()
    window.add_argument("--window", type=int, help="the newest N predictions (default 10000)")
    window.add_argument("--since", metavar="ISO", help="every prediction since this time (e.g. 2026-05-01T00:00:00Z)")
    drift.add_argument("--report", metavar="DIR", help="write drift.json, drift.html and drift.prom here")
    drift.add_argument("--evaluation", help="evaluation.json to compare with (default: the model directory's)")
    drift.add_argument(
        "--any-version", action="store_true", help="include predictions of earlier model versions (default: this one)"
    )
    drift.add_argument("--psi-watch", type=float, default=0.1, help="PSI worth watching (default 0.1)")
    drift.add_argument("--psi-act", type=float, default=0.25, help="PSI that is drift on its own (default 0.25)")
    drift.add_argument("--alpha", type=float, default=0.05, help="test level before Bonferroni (default 0.05)")
    drift.add_argument(
        "--precision-drop", type=float, default=0.10, help="relative precision drop that is drift (default 0.10)"
    )
    drift.add_argument("--min-rows", type=int, default=100, help="fewest predictions to judge drift (default 100)")
    drift.add_argument(
        "--min-labelled", type=int, default=100, help="fewest predictions with ground truth for accuracy (default 100)"
    )
    drift.set_defaults(func=_cmd_drift)
    submit = sub.add_parser("submit", help="compile the pipeline and start a run on a Kubeflow endpoint")
    _add_kubeflow_options(submit)
    submit.add_argument("--run-name", default="")
    submit.set_defaults(func=_cmd_submit)

    upload = sub.add_parser("upload", help="compile the pipeline and upload it to a Kubeflow endpoint")
    upload.add_argument("--host", required=True, help="Kubeflow Pipelines API endpoint")
    upload.add_argument("--namespace", default="")
    upload.add_argument("--name", default="churnflow-training", help="pipeline name in Kubeflow")
    upload.add_argument("--image", help="train image for every component (default: $CHURNFLOW_TRAIN_IMAGE)")
    upload.set_defaults(func=_cmd_upload)

    schedule = sub.add_parser("schedule", help="create a recurring run (scheduled retraining) on a Kubeflow endpoint")
    _add_kubeflow_options(schedule)
    schedule.add_argument("--cron", required=True, help="six-field cron, seconds first: '0 0 3 * * *' = daily 03:00")
    schedule.add_argument("--name", default="churnflow-retraining", help="name of the recurring run")
    schedule.set_defaults(func=_cmd_schedule)

    deploy = sub.add_parser("deploy", help="print or apply the InferenceService for a model directory URI")
    deploy.add_argument("--model-uri", required=True, help="storageUri of the model directory (s3://, gs://, pvc://)")
    deploy.add_argument("--namespace", default="kubeflow-user-example-com")
    deploy.add_argument("--name", default="churn", help="InferenceService (and model) name")
    deploy.add_argument("--image", help="serve image (default: the published churnflow-serve tag)")
    deploy.add_argument("--model-version", default="", help="label churnflow.io/model-version")
    deploy.add_argument(
        "--canary",
        type=int,
        default=0,
        metavar="PERCENT",
        help="route PERCENT of traffic to the new model first (Serverless mode only)",
    )
    deploy.add_argument(
        "--deployment-mode",
        choices=["Serverless", "RawDeployment"],
        help="KServe deployment mode, rendered as the serving.kserve.io/deploymentMode annotation "
        "(default: the cluster's)",
    )
    deploy.add_argument("--prometheus-url", default="", help="Prometheus that scrapes the predictors (for --canary)")
    deploy.add_argument(
        "--canary-bake-seconds", type=float, default=300, help="how long the canary serves before it is judged"
    )
    deploy.add_argument(
        "--canary-max-error-ratio-increase",
        type=float,
        default=0.01,
        help="promote only if the canary's 5xx ratio exceeds the stable model's by at most this",
    )
    deploy.add_argument(
        "--canary-max-p99-ratio", type=float, default=1.5, help="promote only if canary p99 <= this x stable p99"
    )
    deploy.add_argument(
        "--canary-min-requests", type=int, default=20, help="fewer canary requests in the bake window: roll back"
    )
    deploy.add_argument(
        "--served-url",
        default="",
        help="where to read the predictor's model version (e.g. a port-forward); default: the "
        "InferenceService's in-cluster address, reachable from pods",
    )
    deploy.add_argument(
        "--timeout", type=float, default=600, help="seconds to wait for the new model to serve before rolling back"
    )
    deploy.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube/config)")
    deploy.add_argument("--context", help="kubeconfig context")
    deploy.add_argument("--dry-run", action="store_true", help="print the InferenceService YAML, touch nothing")
    deploy.set_defaults(func=_cmd_deploy)
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
