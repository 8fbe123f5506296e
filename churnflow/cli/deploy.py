"""`churnflow deploy`: deploying a released model as a KServe InferenceService."""

from __future__ import annotations

import argparse
from pathlib import Path

from churnflow.components.deploy.inferenceservice import DEFAULT_STORAGE_SERVICE_ACCOUNT


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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Adds deploy to the `churnflow` parser."""
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
