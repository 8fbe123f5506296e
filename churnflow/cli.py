"""The `churnflow` command line: run the pipeline locally, compile it, serve a model.

User errors (ChurnflowError) print one line, `churnflow: error: ...`, and exit 2; nothing else
prints a traceback unless CHURNFLOW_DEBUG=1.

Exit statuses mean one thing whichever command returns them, so scripts and schedulers can act on
them: 0 done, 2 an error in the input (or a failed pipeline step), 3 drift found, 4 a model was
trained but not released (the evaluation gate refused it), 5 drift not judged because the window
holds too few predictions of the model's version and some of other versions (after a retrain).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from churnflow.core.errors import ChurnflowError
from churnflow.monitoring.psi import PSI_ACT, PSI_WATCH

Command = Callable[[argparse.Namespace], int]

EXIT_INPUT_ERROR = 2
DRIFT_EXIT = 3
EXIT_NOT_RELEASED = 4
EXIT_OTHER_VERSIONS = 5
IMPLICIT_DATA = "customer_data.csv"  # what `churnflow generate` writes and `churnflow run` picks up
RELIABILITY_CHART = "reliability.png"


def _implicit_data(args: argparse.Namespace) -> str:
    """`customer_data.csv` in the working directory when no --data/--config is given, announced every time.

    `churnflow generate` writes that file by default, and a later run that trains on it instead of
    fresh synthetic data (or instead of the table the user meant) must never do so silently.
    """
    if args.data or args.config is not None or not Path(IMPLICIT_DATA).is_file():
        return ""
    print(
        f"churnflow: note: no --data given, so this run trains on ./{IMPLICIT_DATA} (the file `churnflow generate` "
        "writes); pass --data to choose a table, or remove the file to train on fresh synthetic data",
        file=sys.stderr,
    )
    return IMPLICIT_DATA


def _copy_reliability_chart(output_dir: Path) -> Path | None:
    """Copies this run's reliability-curve PNG from kfp.local's artifacts to `output_dir/reliability.png`.

    kfp.local keeps it deep under `.kfp/<run>/evaluate-op/`; the newest run directory is this run's.
    """
    runs = sorted((output_dir / ".kfp").glob("*/evaluate-op/reliability_curve"))
    if not runs or not runs[-1].is_file():
        return None
    import shutil

    target = output_dir / RELIABILITY_CHART
    shutil.copyfile(runs[-1], target)
    return target


def _cmd_run(args: argparse.Namespace) -> int:
    if args.image and args.runner != "docker":
        raise ChurnflowError("--image: only with --runner docker (subprocess tasks run in this environment)")
    if args.image:  # read when the components are declared, by the imports below
        os.environ["CHURNFLOW_TRAIN_IMAGE"] = args.image
    from churnflow.core.config import load_config
    from churnflow.pipelines.churn_pipeline import churn_training_pipeline
    from churnflow.pipelines.local import run_local
    from churnflow.pipelines.parameters import parse_assignments

    if args.rows < 10:
        raise ChurnflowError(f"--rows: expected at least 10, got {args.rows}")
    config = load_config(args.config)
    arguments = parse_assignments(args.set or [], churn_training_pipeline)
    data = args.data or _implicit_data(args)
    source = data or f"synthetic data ({args.rows} rows)"
    print(f"churnflow: running the pipeline locally on {source} → {args.output} (log: pipeline.log)")
    runner = None
    if args.runner == "docker":
        from churnflow.pipelines.local import docker_runner

        local_data = (Path(data).absolute().parent,) if data and Path(data).exists() else ()
        runner = docker_runner(Path(args.output), read_only=local_data)
    result = run_local(args.output, config=config, data_uri=data, rows=args.rows, arguments=arguments, runner=runner)
    m = result.metrics
    print(
        f"  roc_auc={m['roc_auc']:.4f} accuracy={m['accuracy']:.4f} precision={m['precision']:.4f} "
        f"recall={m['recall']:.4f} f1={m['f1']:.4f} brier={m['brier']:.4f}"
    )
    params = ", ".join(f"{k}={v}" for k, v in m["params"].items() if k not in ("family", "random_state"))
    print(f"  chose {m['model_family']} ({params}); threshold {m['threshold']:.3f}; pr_auc={m['pr_auc']:.4f}")
    for column, fill in m.get("filled_blanks", {}).items():
        print(f"  filled {fill['blanks']} blank {column!r} cell(s) with the training median {fill['value']:g}")
    print(f"  model card: {result.output_dir / 'model-card.html'}")
    chart = _copy_reliability_chart(result.output_dir)
    if result.deployed:
        print(f"  deployed model {m['model_version']} → {result.output_dir / 'model'}")
    else:
        print(f"  not deployed: {'; '.join(m['reasons'])}")
    print(f"  metrics: {result.output_dir / 'metrics.json'}")
    if chart is not None:
        print(f"  reliability chart: {chart}")
    if not result.deployed:
        kept = result.output_dir / "model"
        still = f"{kept} still holds the model released before" if kept.exists() else "no model is released yet"
        print(
            f"churnflow: trained but not released (exit status {EXIT_NOT_RELEASED}); {still}; "
            f"this run's model is in {result.output_dir / 'candidate'}",
            file=sys.stderr,
        )
        return EXIT_NOT_RELEASED
    return 0


def _task_resources(args: argparse.Namespace):  # -> TaskResources | None
    """--cpu-request/--cpu-limit/--memory-request/--memory-limit as the compute steps' profile."""
    from churnflow.pipelines.resources import compute_profile

    chosen = {
        "cpu_request": args.cpu_request,
        "cpu_limit": args.cpu_limit,
        "memory_request": args.memory_request,
        "memory_limit": args.memory_limit,
    }
    return compute_profile(**chosen) if any(v is not None for v in chosen.values()) else None


def _cmd_compile(args: argparse.Namespace) -> int:
    import yaml

    from churnflow.pipelines.backends import minimum_backend, parse_version, show
    from churnflow.pipelines.kubeflow import compile_pipeline

    backend = parse_version(args.kfp_backend) if args.kfp_backend else None
    image = args.image or os.environ.get("CHURNFLOW_TRAIN_IMAGE")
    resources = _task_resources(args)
    if args.pipeline == "drift":
        from churnflow.pipelines.drift_pipeline import compile_drift_pipeline

        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        path = Path(compile_drift_pipeline(args.output, image=image, backend=backend, resources=resources))
    else:
        pipeline = None
        if args.pipeline == "campaign":
            from churnflow.pipelines.campaign_pipeline import campaign_report_pipeline

            pipeline = campaign_report_pipeline
            if args.output == "churn_pipeline.yaml":
                args.output = "campaign_pipeline.yaml"
        if args.pipeline == "scoring":
            from churnflow.pipelines.scoring_pipeline import make_scoring_pipeline

            if args.parallelism < 1:
                raise ChurnflowError(f"--parallelism: expected at least 1, got {args.parallelism}")
            pipeline = make_scoring_pipeline(args.parallelism)
            if args.output == "churn_pipeline.yaml":
                args.output = "scoring_pipeline.yaml"
        path = compile_pipeline(args.output, image=image, pipeline=pipeline, backend=backend, resources=resources)
    needs = minimum_backend(list(yaml.safe_load_all(path.read_text())))
    print(f"churnflow: wrote {path} (runs on KFP backend {show(needs)} or newer)")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from churnflow.core.synthetic import LAYOUTS

    if args.rows < 1:
        raise ChurnflowError(f"--rows: expected at least 1, got {args.rows}")
    make, target, positive = LAYOUTS[args.layout]
    frame = make(args.rows, args.seed)
    try:
        frame.to_csv(args.output, index=False)
    except OSError as error:
        raise ChurnflowError(f"--output {args.output}: cannot write it ({error.strerror or error})") from None
    rate = (frame[target] == positive).mean()
    print(f"churnflow: wrote {len(frame)} {args.layout} rows to {args.output} (churn rate {rate:.3f})")
    if Path(args.output).resolve() == Path(IMPLICIT_DATA).resolve():
        print(
            f"  note: `churnflow run` without --data in this directory now trains on {IMPLICIT_DATA}, "
            "not on fresh synthetic data (remove the file to go back)"
        )
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
        metadata_sha256=args.metadata_sha256,
        enable_repository_api=args.enable_repository_api or None,
    )
    return 0


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
    )
    rate = summary.rows_read / max(summary.seconds, 1e-9)
    print(
        f"churnflow: scored {summary.rows_scored} of {summary.rows_read} rows in {summary.seconds:.1f} s "
        f"({rate:,.0f} rows/s) → {summary.output}"
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


def _cmd_plan(args: argparse.Namespace) -> int:
    from churnflow.campaigns.plan import (
        Campaign,
        explain_list,
        make_plan,
        money_text,
        read_scores,
        write_plan,
        write_plan_html,
    )
    from churnflow.core.config import load_config

    campaign = Campaign(
        contact_cost=args.contact_cost,
        offer_cost=args.offer_cost,
        save_rate=args.save_rate,
        budget=args.budget,
        top=args.top,
        control_fraction=args.control_fraction,
        seed=args.seed,
        min_control=args.min_control,
        currency=args.currency,
    )
    campaign.check()
    campaign.check_affordable()
    if bool(args.model_dir) != bool(args.data) and not (args.uplift_from and args.data):
        raise ChurnflowError("plan: give --model-dir and --data together (for the reasons), or neither")
    if args.uplift_from and not args.data:
        raise ChurnflowError("--uplift-from: needs --data (the customers' features) and --config")
    scores, id_column = read_scores(args.scores)
    uplift, uplift_notes = None, []
    if args.uplift_from:
        from churnflow.campaigns.uplift import estimate

        ids = [str(v) for v in scores.column(id_column).to_pylist()]
        uplift, uplift_notes = estimate(args.uplift_from, args.data, load_config(args.config), ids)
    plan = make_plan(scores, id_column, campaign, uplift)
    plan.notes[:0] = uplift_notes
    if args.model_dir and args.data:
        explain_list(plan, args.model_dir, args.data, load_config(args.config))
    else:
        given = "no --model-dir" if args.data else "no --model-dir/--data"
        plan.notes.append(f"{given} given: the call list has no reasons")
    paths = write_plan(plan, args.output)
    if args.report == "html":
        paths["report"] = write_plan_html(plan, paths)
    summary = plan.summary()
    money = args.currency
    print(f"churnflow: {summary['formula']}")
    print(
        f"  contact {summary['contacted']:,} of {summary['customers_scored']:,} customers "
        f"(control group {summary['control']:,}, not contacted); "
        f"expected spend {money_text(summary['expected_spend'], money)}"
    )
    print(f"  expected net saving of the contacted list: {money_text(summary['expected_net_saving'], money)}")
    warning = plan.measurement_note()
    if warning:
        print(f"  warning: {warning}")
    for note in plan.notes:
        print(f"  note: {note}")
    print(f"  call list: {paths['call_list']}; charts: {paths['expected_saving']}, {paths['cumulative_gains']}")
    if "report" in paths:
        print(f"  report: {paths['report']}")
    return 0


def _cmd_campaign_report(args: argparse.Namespace) -> int:
    from churnflow.campaigns.measurement import campaign_report, summary_lines

    report = campaign_report(args.plan, args.outcomes, args.output, args.format)
    print(f"churnflow: campaign report → {Path(args.output) / 'report.json'}, report.html")
    for line in summary_lines(report):
        print(f"  {line}")
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


def _other_versions(store_url: str, report: dict, *, model_name: str, window: int | None, since) -> dict[str, int]:
    """Predictions in the same window (newest N, or since a time) made by other versions of the model.

    After a retrain the window is mostly the previous version's predictions, which the default check
    leaves out; a check that then says "0 predictions, no drift" must say why.
    """
    from churnflow.store.database import PredictionStore

    store = PredictionStore(store_url)
    try:
        frame = store.call(
            "reading predictions",
            store.read_predictions,
            model_name=model_name,
            window=None if since is not None and window is None else window,
            since=since,
        )
    finally:
        store.close()
    versions = frame.loc[frame["model_version"] != report.get("model_version"), "model_version"]
    return {str(v): int(n) for v, n in versions.value_counts().items()}


def _cmd_drift(args: argparse.Namespace) -> int:
    import datetime as dt

    from churnflow.monitoring.drift import Thresholds, run_check, summary
    from churnflow.monitoring.drift_report import write_report

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
    window_size = args.window if args.window is not None else (None if since else 10_000)
    report = run_check(
        _store_url(args),
        args.model_dir,
        model_name=args.model_name,
        window=window_size,
        since=since,
        any_version=args.any_version,
        evaluation_path=args.evaluation,
        thresholds=thresholds,
    )
    others = (
        {}
        if args.any_version
        else _other_versions(_store_url(args), report, model_name=args.model_name, window=window_size, since=since)
    )
    report["other_versions"] = others  # also in drift.json
    lines = summary(report).splitlines()  # the last line is the verdict
    status = DRIFT_EXIT if report["drift"] else 0
    if others:
        version = report.get("model_version")
        listed = ", ".join(f"{n} of {v}" for v, n in sorted(others.items(), key=lambda item: (-item[1], item[0])))
        lines.insert(
            -1,
            f"  note: the window also holds {sum(others.values())} predictions of other model versions ({listed}), "
            f"not counted: only {version}'s are; --any-version counts them all",
        )
        if not report["drift"] and report["window"]["rows"] < args.min_rows:
            lines[-1] = (
                f"  → not judged: {report['window']['rows']} predictions of {version}, the rest are other "
                f"versions' (exit status {EXIT_OTHER_VERSIONS})"
            )
            status = EXIT_OTHER_VERSIONS
    print("\n".join(lines))
    if args.report:
        paths = write_report(report, args.report)
        print(f"  report: {paths['html']} ({paths['json'].name}, {paths['prom'].name})")
    gateway = args.pushgateway or os.environ.get("CHURNFLOW_PUSHGATEWAY", "")
    if gateway:
        from churnflow.monitoring.drift_report import push_report

        group = push_report(report, gateway, namespace=args.namespace)
        print(f"  pushed to {gateway} ({', '.join(f'{k}={v}' for k, v in group.items())})")
    return status


def _deploy_namespace(arguments: dict, profile: str) -> None:
    """The deploy step deploys into the profile the run runs in (`--namespace`): the deploy step's Role
    (manifests/rbac.yaml) and the predictor's AuthorizationPolicy are applied there, and in multi-user
    Kubeflow the run's service account may act in no other namespace. Without a profile (single-user
    KFP) the pipeline's own `namespace` parameter, or `--set namespace=`, decides."""
    if not profile:
        return
    given = arguments.get("namespace")
    if given is not None and given != profile:
        raise ChurnflowError(
            f"--set namespace={given} contradicts --namespace {profile}: the run's deploy step deploys into its "
            "profile namespace (where manifests/ grant it the rights); drop one of them"
        )
    arguments["namespace"] = profile


def _pipeline_arguments(args: argparse.Namespace) -> dict:
    """--data/--config/--set as training-pipeline arguments (the config travels as JSON)."""
    from churnflow.core.config import config_to_json, load_config
    from churnflow.pipelines.churn_pipeline import churn_training_pipeline
    from churnflow.pipelines.parameters import parse_assignments

    arguments = parse_assignments(args.set or [], churn_training_pipeline)
    _deploy_namespace(arguments, args.namespace)
    if args.data:
        arguments["data_uri"] = args.data
    if args.config:
        arguments["dataset_config"] = config_to_json(load_config(args.config))
    return arguments


def _cmd_submit(args: argparse.Namespace) -> int:
    from churnflow.pipelines.kubeflow import backend_option, submit_run

    run_id = submit_run(
        args.host,
        _pipeline_arguments(args),
        namespace=args.namespace,
        experiment=args.experiment,
        run_name=args.run_name,
        image=args.image or os.environ.get("CHURNFLOW_TRAIN_IMAGE"),
        service_account=args.service_account,
        backend=backend_option(args.kfp_backend),
        resources=_task_resources(args),
    )
    print(f"churnflow: started run {run_id} in experiment {args.experiment!r} at {args.host}")
    return 0


def _cmd_upload(args: argparse.Namespace) -> int:
    from churnflow.pipelines.kubeflow import backend_option, upload_pipeline

    pipeline_id = upload_pipeline(
        args.host,
        args.name,
        namespace=args.namespace,
        image=args.image or os.environ.get("CHURNFLOW_TRAIN_IMAGE"),
        backend=backend_option(args.kfp_backend),
        resources=_task_resources(args),
    )
    print(f"churnflow: uploaded pipeline {args.name!r} as {pipeline_id} to {args.host}")
    return 0


def _cmd_schedule(args: argparse.Namespace) -> int:
    from churnflow.pipelines.kubeflow import backend_option, schedule_runs

    job_id = schedule_runs(
        args.host,
        args.cron,
        _pipeline_arguments(args),
        namespace=args.namespace,
        experiment=args.experiment,
        job_name=args.name,
        image=args.image or os.environ.get("CHURNFLOW_TRAIN_IMAGE"),
        service_account=args.service_account,
        backend=backend_option(args.kfp_backend),
        resources=_task_resources(args),
    )
    print(f"churnflow: recurring run {job_id} ({args.cron!r}) in experiment {args.experiment!r} at {args.host}")
    return 0


def _deploy_metadata_digest(args: argparse.Namespace) -> str:
    """--metadata-sha256, else the digest of metadata.json when --model-uri is a local directory."""
    from churnflow.components.deploy.logic import metadata_digest

    if args.metadata_sha256:
        return args.metadata_sha256.lower()
    local = Path(args.model_uri.removeprefix("file://"))
    if "://" not in args.model_uri.removeprefix("file://") and local.is_dir():
        return metadata_digest(local)
    return ""


def _cmd_deploy(args: argparse.Namespace) -> int:
    from churnflow.components.deploy.inferenceservice import DEFAULT_SERVE_IMAGE, render_inferenceservice, to_yaml
    from churnflow.components.deploy.kubernetes import with_canary

    manifest = render_inferenceservice(
        name=args.name,
        namespace=args.namespace,
        storage_uri=args.model_uri,
        image=args.image or DEFAULT_SERVE_IMAGE,
        model_version=args.model_version,
        pipeline_run=args.run_name,
        service_account=args.service_account,
        deployment_mode=args.deployment_mode,
        metadata_sha256=_deploy_metadata_digest(args),
        store_secret=args.store_secret,
    )
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
    command.add_argument(
        "--service-account",
        default="churnflow-pipeline",
        help="Kubernetes service account the run's pods use (default churnflow-pipeline, from manifests/rbac.yaml; "
        "'' for the namespace's default)",
    )
    _add_backend_option(command)


def _add_backend_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--kfp-backend",
        default="auto",
        metavar="X.Y",
        help="KFP backend version to compile for (default auto: read from the API; older than 2.14 gets a DAG "
        "without dsl.Collected)",
    )


def _add_resource_options(command: argparse.ArgumentParser) -> None:
    resources = command.add_argument_group(
        "resources of the compute steps (preprocess, cv-score, train, evaluate, drift-check)",
        "compiled in as constants, which every KFP backend honours; the light steps keep 100m-500m CPU, "
        "256Mi-1Gi memory",
    )
    resources.add_argument("--cpu-request", metavar="CPU", help="default 500m")
    resources.add_argument("--cpu-limit", metavar="CPU", help="default 2")
    resources.add_argument("--memory-request", metavar="MEMORY", help="default 1Gi")
    resources.add_argument("--memory-limit", metavar="MEMORY", help="default 4Gi")


def build_parser() -> argparse.ArgumentParser:
    from churnflow.components.deploy.inferenceservice import DEFAULT_STORAGE_SERVICE_ACCOUNT

    parser = argparse.ArgumentParser(prog="churnflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the whole pipeline locally through kfp.local",
        description=f"Exit status: 0 released, {EXIT_NOT_RELEASED} trained but not released (the evaluation gate "
        f"refused the model; the reasons are printed and the model released before stays), {EXIT_INPUT_ERROR} an "
        "error in the input or a failed step.",
    )
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
    run.add_argument(
        "--runner",
        choices=["subprocess", "docker"],
        default="subprocess",
        help="subprocess (default): every task a process here; docker: every task in the train image through "
        "kfp.local's DockerRunner, as the image's user (needs a Docker engine)",
    )
    run.add_argument(
        "--image", help="with --runner docker: the train image (default: $CHURNFLOW_TRAIN_IMAGE or the published tag)"
    )
    run.set_defaults(func=_cmd_run)

    comp = sub.add_parser("compile", help="compile the pipeline to KFP YAML")
    comp.add_argument("--output", default="churn_pipeline.yaml")
    comp.add_argument(
        "--image", help="train image for every component (default: $CHURNFLOW_TRAIN_IMAGE or the published tag)"
    )
    comp.add_argument(
        "--kfp-backend",
        metavar="X.Y",
        help="compile for this KFP backend version (default: the newest; below 2.14 tuning runs in one task "
        "instead of a fan-in with dsl.Collected)",
    )
    comp.add_argument(
        "--pipeline",
        choices=["training", "drift", "scoring", "campaign"],
        default="training",
        help="which pipeline: training (default), drift (the drift check), scoring (score the base in shards, "
        "then plan) or campaign (measure a campaign against its control group)",
    )
    comp.add_argument(
        "--parallelism", type=int, default=8, help="scoring pipeline: most shards scored at once (default 8)"
    )
    _add_resource_options(comp)
    comp.set_defaults(func=_cmd_compile)

    gen = sub.add_parser("generate", help="write a synthetic customer table as CSV")
    gen.add_argument("--rows", type=int, default=1000)
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument(
        "--layout",
        choices=["classic", "telco"],
        default="classic",
        help="classic: the default config's columns; telco: the 21 columns of IBM's Telco Customer Churn sample, "
        "for examples/telco/config.yaml (default classic)",
    )
    gen.add_argument(
        "--output",
        default=IMPLICIT_DATA,
        help=f"CSV to write (default {IMPLICIT_DATA}, which `churnflow run` without --data then trains on)",
    )
    gen.set_defaults(func=_cmd_generate)

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
    score.set_defaults(func=_cmd_score)

    plan = sub.add_parser("plan", help="choose whom to contact from the scores: budget or top K, control group")
    plan.add_argument("--scores", required=True, help="output of churnflow score (path or URI)")
    plan.add_argument("--output", required=True, help="directory for call_list.csv, plan.json and the charts")
    limit = plan.add_mutually_exclusive_group()
    limit.add_argument("--budget", type=float, help="most expected spend (contacts plus offers paid)")
    limit.add_argument("--top", type=int, help="contact at most K customers")
    plan.add_argument("--contact-cost", type=float, required=True, help="cost of contacting one customer")
    plan.add_argument("--offer-cost", type=float, required=True, help="cost of the offer to a customer it saves")
    plan.add_argument("--save-rate", type=float, required=True, help="share of contacted churners the offer keeps")
    plan.add_argument("--control-fraction", type=float, default=0.1, help="random share kept as control (0.1)")
    plan.add_argument("--seed", type=int, default=0, help="seed of the control group draw (default 0)")
    plan.add_argument(
        "--min-control",
        type=int,
        default=0,
        help="smallest control group (the plan prints the size that detects its expected effect)",
    )
    plan.add_argument("--currency", default="", help="currency of the values and costs, for the charts (e.g. EUR)")
    plan.add_argument("--report", choices=["html"], help="also write plan.html, the one-page campaign plan")
    plan.add_argument(
        "--uplift-from",
        metavar="REPORT_DIR",
        help="a past campaign's report (churnflow campaign-report --output): rank by expected saving = "
        "uplift × value − costs, with --data and --config",
    )
    plan.add_argument("--model-dir", help="model directory or URI, for each customer's top three reasons")
    plan.add_argument("--data", help="the customer table that was scored, for the reasons")
    plan.add_argument("--config", help="dataset config (the id column), as given to churnflow score")
    plan.set_defaults(func=_cmd_plan)

    report = sub.add_parser(
        "campaign-report", help="measure a campaign against its control group once the outcomes are known"
    )
    report.add_argument("--plan", required=True, help="the plan directory (output of churnflow plan; path or URI)")
    report.add_argument(
        "--outcomes", required=True, help="table of the call list's id column and churned (0/1); path or URI"
    )
    report.add_argument("--output", required=True, help="directory for report.json, report.html and the charts")
    report.add_argument("--format", choices=["csv", "parquet"], help="outcomes format (default: from the file names)")
    report.set_defaults(func=_cmd_campaign_report)

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
    srv.add_argument(
        "--metadata-sha256",
        metavar="HEX",
        help="refuse the model unless its metadata.json has this SHA-256 (default: $CHURNFLOW_METADATA_SHA256)",
    )
    srv.add_argument(
        "--enable-repository-api",
        action="store_true",
        help="serve the model repository's load/unload requests (default: off, or $CHURNFLOW_REPOSITORY_API=true)",
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
        description=f"Exit status: 0 no drift (or too few predictions to judge), {DRIFT_EXIT} drift, "
        f"{EXIT_OTHER_VERSIONS} not judged: too few predictions of this model version while the window holds other "
        f"versions' (after a retrain: wait for more, or pass --any-version), {EXIT_INPUT_ERROR} an error in the input.",
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
        "--pushgateway",
        metavar="URL",
        help="push the results to this Prometheus Pushgateway, e.g. http://localhost:9091 "
        "(default: $CHURNFLOW_PUSHGATEWAY; unset: not pushed)",
    )
    drift.add_argument("--namespace", default="", help="namespace label of the pushed results (default: none)")
    drift.add_argument(
        "--any-version",
        action="store_true",
        help="count the predictions of every model version in the window (default: only the --model-dir's version; "
        "the others are reported, and exit status 5 says when they left too few to judge)",
    )
    drift.add_argument("--psi-watch", type=float, default=PSI_WATCH, help=f"PSI worth watching (default {PSI_WATCH})")
    drift.add_argument(
        "--psi-act", type=float, default=PSI_ACT, help=f"PSI that is drift on its own (default {PSI_ACT})"
    )
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
    _add_resource_options(submit)
    submit.set_defaults(func=_cmd_submit)

    upload = sub.add_parser("upload", help="compile the pipeline and upload it to a Kubeflow endpoint")
    upload.add_argument("--host", required=True, help="Kubeflow Pipelines API endpoint")
    upload.add_argument("--namespace", default="")
    upload.add_argument("--name", default="churnflow-training", help="pipeline name in Kubeflow")
    upload.add_argument("--image", help="train image for every component (default: $CHURNFLOW_TRAIN_IMAGE)")
    _add_backend_option(upload)
    _add_resource_options(upload)
    upload.set_defaults(func=_cmd_upload)

    schedule = sub.add_parser("schedule", help="create a recurring run (scheduled retraining) on a Kubeflow endpoint")
    _add_kubeflow_options(schedule)
    schedule.add_argument("--cron", required=True, help="six-field cron, seconds first: '0 0 3 * * *' = daily 03:00")
    schedule.add_argument("--name", default="churnflow-retraining", help="name of the recurring run")
    _add_resource_options(schedule)
    schedule.set_defaults(func=_cmd_schedule)

    deploy = sub.add_parser("deploy", help="print or apply the InferenceService for a model directory URI")
    deploy.add_argument("--model-uri", required=True, help="storageUri of the model directory (s3://, gs://, pvc://)")
    deploy.add_argument("--namespace", default="kubeflow-user-example-com")
    deploy.add_argument("--name", default="churn", help="InferenceService (and model) name")
    deploy.add_argument("--image", help="serve image (default: the published churnflow-serve tag)")
    deploy.add_argument("--model-version", default="", help="label churnflow.io/model-version")
    deploy.add_argument(
        "--run-name",
        default="",
        help="the pipeline run it comes from: label churnflow.io/pipeline-run (made a valid label value) and "
        "annotation churnflow.io/pipeline-run-name (as given)",
    )
    deploy.add_argument(
        "--service-account",
        default=DEFAULT_STORAGE_SERVICE_ACCOUNT,
        help="the predictor's service account, whose Secret holds the model storage credentials "
        f"(default {DEFAULT_STORAGE_SERVICE_ACCOUNT}, from manifests/storage.yaml; '' for none)",
    )
    deploy.add_argument(
        "--deployment-mode",
        default="Serverless",
        help="KServe deployment mode, Serverless (default) or RawDeployment: annotation "
        "serving.kserve.io/deploymentMode, and the autoscaling metric",
    )
    deploy.add_argument(
        "--metadata-sha256",
        default="",
        help="SHA-256 of the model's metadata.json, which the predictor checks before loading "
        "(default: computed when --model-uri is a local directory)",
    )
    deploy.add_argument(
        "--store-secret",
        default="churnflow-store",
        help="Secret whose key `url` is the prediction store the predictor logs to ('' logs nothing)",
    )
    deploy.add_argument(
        "--canary",
        type=int,
        default=0,
        metavar="PERCENT",
        help="route PERCENT of traffic to the new model first (Serverless mode only)",
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
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
