"""`churnflow deploy`: deploying a released model as a KServe InferenceService."""

from __future__ import annotations

import argparse
from pathlib import Path

from churnflow.components.deploy.canary import DEFAULT_CANARY, NO_CANARY
from churnflow.components.deploy.inferenceservice import (
    DEFAULT_NAMESPACE,
    DEFAULT_STORAGE_SERVICE_ACCOUNT,
    SERVERLESS,
    STORE_SECRET,
)
from churnflow.components.deploy.kubernetes import READY_TIMEOUT_SECONDS
from churnflow.core.artifact import DEFAULT_MODEL_NAME
from churnflow.core.errors import ChurnflowError


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
    """The deploy step's own rendering and rollout (components/deploy/logic.py), from options."""
    from churnflow.components.deploy.inferenceservice import DEFAULT_SERVE_IMAGE, to_yaml
    from churnflow.components.deploy.kubernetes import with_canary
    from churnflow.components.deploy.logic import CANARY_ROLLED_BACK, inferenceservice_for, roll_out

    manifest = inferenceservice_for(
        args.model_uri,
        name=args.name,
        namespace=args.namespace,
        image=args.image or DEFAULT_SERVE_IMAGE,
        model_version=args.model_version,
        metadata_sha256=_deploy_metadata_digest(args),
        pipeline_run=args.run_name,
        service_account=args.service_account,
        deployment_mode=args.deployment_mode,
        store_secret=args.store_secret,
    )
    if args.dry_run:  # as it would be applied: a canary's traffic share included
        print(to_yaml(with_canary(manifest, args.canary_percent)), end="")
        return 0
    from churnflow.components.deploy.canary import CanaryPolicy
    from churnflow.components.deploy.kubernetes import custom_objects_api

    report = roll_out(
        manifest,
        canary_percent=args.canary_percent,
        canary=CanaryPolicy(
            prometheus_url=args.prometheus_url,
            bake_seconds=args.canary_bake_seconds,
            max_error_ratio_increase=args.canary_max_error_ratio_increase,
            max_p99_ratio=args.canary_max_p99_ratio,
            min_requests=args.canary_min_requests,
        ),
        ready_timeout_seconds=args.timeout,
        api=custom_objects_api(args.kubeconfig, args.context),
        served_url=args.served_url,
    )
    if report["action"] == CANARY_ROLLED_BACK:  # the step reports it and succeeds; a command fails
        raise ChurnflowError(report["message"])
    print(
        f"churnflow: {report['action']} inferenceservice {report['namespace']}/{report['name']}; "
        f"ready at {report['url']}"
    )
    if report["canary"]:
        print(f"churnflow: canary promoted: {report['canary']['reason']}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Adds deploy to the `churnflow` parser."""
    deploy = sub.add_parser("deploy", help="print or apply the InferenceService for a model directory URI")
    deploy.add_argument("--model-uri", required=True, help="storageUri of the model directory (s3://, gs://, pvc://)")
    deploy.add_argument("--namespace", default=DEFAULT_NAMESPACE)
    deploy.add_argument("--name", default=DEFAULT_MODEL_NAME, help="InferenceService (and model) name")
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
        default=SERVERLESS,
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
        default=STORE_SECRET,
        help="Secret whose key `url` is the prediction store the predictor logs to ('' logs nothing)",
    )
    deploy.add_argument(
        "--canary-percent",
        "--canary",
        dest="canary_percent",
        type=int,
        default=NO_CANARY,
        metavar="PERCENT",
        help="route PERCENT of traffic to the new model first (Serverless mode only); --canary is the same",
    )
    canary = DEFAULT_CANARY  # the deploy step's and the training pipeline's defaults too
    deploy.add_argument(
        "--prometheus-url",
        default=canary.prometheus_url,
        help="Prometheus that scrapes the predictors (for --canary-percent)",
    )
    deploy.add_argument(
        "--canary-bake-seconds",
        type=float,
        default=canary.bake_seconds,
        help=f"how long the canary serves before it is judged (default {canary.bake_seconds:g})",
    )
    deploy.add_argument(
        "--canary-max-error-ratio-increase",
        type=float,
        default=canary.max_error_ratio_increase,
        help="promote only if the canary's 5xx ratio exceeds the stable model's by at most this "
        f"(default {canary.max_error_ratio_increase:g})",
    )
    deploy.add_argument(
        "--canary-max-p99-ratio",
        type=float,
        default=canary.max_p99_ratio,
        help=f"promote only if canary p99 <= this x stable p99 (default {canary.max_p99_ratio:g})",
    )
    deploy.add_argument(
        "--canary-min-requests",
        type=int,
        default=canary.min_requests,
        help=f"fewer canary requests in the bake window: roll back (default {canary.min_requests})",
    )
    deploy.add_argument(
        "--served-url",
        default="",
        help="where to read the predictor's model version (e.g. a port-forward); default: the "
        "InferenceService's in-cluster address, reachable from pods",
    )
    deploy.add_argument(
        "--timeout",
        type=float,
        default=READY_TIMEOUT_SECONDS,
        help=f"seconds to wait for the new model to serve before rolling back (default {READY_TIMEOUT_SECONDS:g})",
    )
    deploy.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube/config)")
    deploy.add_argument("--context", help="kubeconfig context")
    deploy.add_argument("--dry-run", action="store_true", help="print the InferenceService YAML, touch nothing")
    deploy.set_defaults(func=_cmd_deploy)
