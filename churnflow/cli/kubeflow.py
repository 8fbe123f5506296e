"""`churnflow compile | submit | upload | schedule`: compiling the pipelines to KFP YAML and running them on
a Kubeflow Pipelines endpoint.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from churnflow.core.errors import ChurnflowError
from churnflow.pipelines.kubeflow import DEFAULT_EXPERIMENT, DEFAULT_SERVICE_ACCOUNT


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


def _chosen_pipeline(args: argparse.Namespace):  # -> GraphComponent | None
    """--pipeline: None for the training pipeline (kubeflow.py's default), else the scoring pipeline."""
    if getattr(args, "pipeline", "training") != "scoring":
        return None
    from churnflow.pipelines.scoring_pipeline import make_scoring_pipeline

    if args.parallelism < 1:
        raise ChurnflowError(f"--parallelism: expected at least 1, got {args.parallelism}")
    return make_scoring_pipeline(args.parallelism)


def _pipeline_arguments(args: argparse.Namespace, pipeline=None) -> dict:
    """--data/--config/--model-uri/--set as the chosen pipeline's arguments (the config travels as JSON)."""
    from churnflow.core.config import config_to_json, load_config
    from churnflow.pipelines.churn_pipeline import churn_training_pipeline
    from churnflow.pipelines.parameters import parse_assignments

    arguments = parse_assignments(args.set or [], pipeline or churn_training_pipeline)
    if pipeline is None:
        _deploy_namespace(arguments, args.namespace)
    if args.data:
        arguments["data_uri"] = args.data
    if args.config:
        arguments["dataset_config"] = config_to_json(load_config(args.config))
    if getattr(args, "model_uri", None):
        if pipeline is None:
            raise ChurnflowError("--model-uri: only the scoring pipeline takes it (add --pipeline scoring)")
        arguments["model_uri"] = args.model_uri
    if pipeline is not None:  # refused here, before anything is compiled or sent
        required = {"model_uri": "--model-uri", "data_uri": "--data"}
        missing = [option for name, option in required.items() if not arguments.get(name)]
        if missing:
            options = " and ".join(missing)
            raise ChurnflowError(f"--pipeline scoring: give {options} (the released model and the base to score)")
    return arguments


def _cmd_submit(args: argparse.Namespace) -> int:
    from churnflow.pipelines.kubeflow import backend_option, submit_run

    pipeline = _chosen_pipeline(args)
    run_id = submit_run(
        args.host,
        _pipeline_arguments(args, pipeline),
        pipeline=pipeline,
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

    pipeline = _chosen_pipeline(args)
    if args.name is None:
        args.name = "churnflow-scoring" if pipeline is not None else "churnflow-training"
    pipeline_id = upload_pipeline(
        args.host,
        args.name,
        pipeline=pipeline,
        namespace=args.namespace,
        image=args.image or os.environ.get("CHURNFLOW_TRAIN_IMAGE"),
        backend=backend_option(args.kfp_backend),
        resources=_task_resources(args),
    )
    print(f"churnflow: uploaded pipeline {args.name!r} as {pipeline_id} to {args.host}")
    return 0


def _cmd_schedule(args: argparse.Namespace) -> int:
    from churnflow.pipelines.kubeflow import backend_option, schedule_runs

    pipeline = _chosen_pipeline(args)
    if args.name is None:
        args.name = "churnflow-scoring" if pipeline is not None else "churnflow-retraining"
    job_id = schedule_runs(
        args.host,
        args.cron,
        _pipeline_arguments(args, pipeline),
        pipeline=pipeline,
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


def _add_kubeflow_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--host", required=True, help="Kubeflow Pipelines API endpoint, e.g. http://localhost:8080")
    command.add_argument("--namespace", default="", help="Kubeflow profile namespace (multi-user clusters)")
    command.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    command.add_argument("--image", help="train image for every component (default: $CHURNFLOW_TRAIN_IMAGE)")
    command.add_argument("--data", help="data_uri for the runs")
    command.add_argument("--config", help="dataset config file, sent as the dataset_config parameter")
    command.add_argument("--set", action="append", metavar="NAME=VALUE", help="a pipeline parameter (repeatable)")
    command.add_argument(
        "--service-account",
        default=DEFAULT_SERVICE_ACCOUNT,
        help=f"Kubernetes service account the run's pods use (default {DEFAULT_SERVICE_ACCOUNT}, from "
        "manifests/rbac.yaml; '' for the namespace's default)",
    )
    command.add_argument("--model-uri", help="scoring pipeline: the released model to score with (model_uri)")
    _add_pipeline_choice(command)
    _add_backend_option(command)


def _add_pipeline_choice(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--pipeline",
        choices=["training", "scoring"],
        default="training",
        help="training (default) or scoring (score the base in shards with --model-uri, then plan)",
    )
    command.add_argument(
        "--parallelism", type=int, default=8, help="scoring pipeline: most shards scored at once (default 8)"
    )


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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Adds compile, submit, upload, schedule to the `churnflow` parser."""
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

    submit = sub.add_parser("submit", help="compile the pipeline and start a run on a Kubeflow endpoint")
    _add_kubeflow_options(submit)
    submit.add_argument("--run-name", default="")
    _add_resource_options(submit)
    submit.set_defaults(func=_cmd_submit)

    upload = sub.add_parser("upload", help="compile the pipeline and upload it to a Kubeflow endpoint")
    upload.add_argument("--host", required=True, help="Kubeflow Pipelines API endpoint")
    upload.add_argument("--namespace", default="")
    upload.add_argument("--name", help="pipeline name in Kubeflow (default churnflow-training or churnflow-scoring)")
    upload.add_argument("--image", help="train image for every component (default: $CHURNFLOW_TRAIN_IMAGE)")
    _add_pipeline_choice(upload)
    _add_backend_option(upload)
    _add_resource_options(upload)
    upload.set_defaults(func=_cmd_upload)

    schedule = sub.add_parser("schedule", help="create a recurring run (scheduled retraining) on a Kubeflow endpoint")
    _add_kubeflow_options(schedule)
    schedule.add_argument("--cron", required=True, help="six-field cron, seconds first: '0 0 3 * * *' = daily 03:00")
    schedule.add_argument(
        "--name", help="name of the recurring run (default churnflow-retraining, or churnflow-scoring)"
    )
    _add_resource_options(schedule)
    schedule.set_defaults(func=_cmd_schedule)
