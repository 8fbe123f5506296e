"""Deploy: release the evaluated model. Runs only when evaluate said `deploy`.

Here it renders the InferenceService for the new model and, in local mode, publishes the model
directory atomically where the local model server loads it. Applying the resource to a cluster is
the `apply_inferenceservice` seam (see churnflow deploy).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from churnflow.components.deploy.inferenceservice import (
    DEFAULT_STORAGE_SERVICE_ACCOUNT,
    SERVERLESS,
    check_deployment_mode,
    render_inferenceservice,
    to_yaml,
)
from churnflow.core.artifact import EVALUATION_FILE, METADATA_FILE, publish_directory, verify_files
from churnflow.core.errors import ChurnflowError

MANIFEST_FILE = "inferenceservice.yaml"


def release_locally(model_dir: str | Path, evaluation: dict[str, Any], target: str | Path) -> Path:
    """Publishes model + its evaluation to `target` (a symlink swapped atomically); returns the release.

    The model is verified before it is copied, so a damaged artifact never replaces a good release.
    """
    verify_files(model_dir)
    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging) / "model"
        shutil.copytree(model_dir, staged)
        (staged / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=2) + "\n")
        return publish_directory(staged, target)


def metadata_digest(model_dir: str | Path) -> str:
    """SHA-256 of the model's metadata.json: the InferenceService carries it so the predictor can tell
    that the artifact it downloads is the one this step evaluated (metadata.json holds the digest of
    every other file)."""
    path = Path(model_dir) / METADATA_FILE
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise ChurnflowError(f"model directory {model_dir}: cannot read {METADATA_FILE} ({error.strerror})") from None


def deploy(
    model_dir: str | Path,
    model_uri: str,
    evaluation: dict[str, Any],
    manifest_path: str | Path,
    *,
    name: str,
    namespace: str,
    image: str,
    model_version: str,
    pipeline_run: str = "",
    local_release_dir: str = "",
    mode: str = "render",
    canary_percent: int = 0,
    ready_timeout_seconds: float = 600,
    service_account: str = DEFAULT_STORAGE_SERVICE_ACCOUNT,
    deployment_mode: str = SERVERLESS,
    store_secret: str = "",
    canary_bake_seconds: float = 300,
    prometheus_url: str = "",
    canary_max_error_ratio_increase: float = 0.01,
    canary_max_p99_ratio: float = 1.5,
    canary_min_requests: int = 20,
    rollout_report_path: str | Path = "",
    poll_seconds: float = 5,
) -> dict[str, Any]:
    """Writes the InferenceService manifest; releases locally when `local_release_dir` is set, and in
    "apply" mode creates or patches it on the cluster (components/deploy/kubernetes.py).

    Locally the manifest is also written beside the release (`<parent>/inferenceservice.yaml`) with
    storageUri pointing at it, which is what `churnflow run` leaves in its output directory.
    `deployment_mode` (Serverless or RawDeployment) is rendered as KServe's annotation, which wins over
    the cluster default, and decides whether a canary is possible. The rollout's outcome (with a canary's numbers
    and decision) is written as JSON to `rollout_report_path`: a canary judged worse than the stable
    model is rolled back and reported there, and the step succeeds, as an evaluation gate that says
    "do not deploy" does; a rollout that fails (timeout, crash loop, API error) fails the step.
    """
    check_deployment_mode(deployment_mode)  # before anything is released
    storage_uri = model_uri
    if local_release_dir:
        release_locally(model_dir, evaluation, local_release_dir)
        storage_uri = Path(local_release_dir).absolute().as_uri()
    manifest = render_inferenceservice(
        name=name,
        namespace=namespace,
        storage_uri=storage_uri,
        image=image,
        model_version=model_version,
        pipeline_run=pipeline_run,
        service_account=service_account,
        deployment_mode=deployment_mode,
        metadata_sha256=metadata_digest(model_dir),
        store_secret=store_secret,
    )
    text = to_yaml(manifest)
    Path(manifest_path).parent.mkdir(parents=True, exist_ok=True)
    Path(manifest_path).write_text(text)
    if local_release_dir:
        (Path(local_release_dir).parent / MANIFEST_FILE).write_text(text)
    report: dict[str, Any] = {"action": "rendered", "model_version": model_version}
    if mode == "apply":
        from churnflow.components.deploy.kubernetes import (
            CanaryPolicy,
            CanaryRolledBack,
            apply_inferenceservice,
            custom_objects_api,
        )

        policy = CanaryPolicy(
            prometheus_url=prometheus_url,
            bake_seconds=canary_bake_seconds,
            max_error_ratio_increase=canary_max_error_ratio_increase,
            max_p99_ratio=canary_max_p99_ratio,
            min_requests=canary_min_requests,
        )
        try:
            rollout = apply_inferenceservice(
                custom_objects_api(),
                manifest,
                canary_percent=canary_percent,
                timeout_seconds=ready_timeout_seconds,
                poll_seconds=poll_seconds,
                canary_policy=policy,
            )
            report = rollout.report()
        except CanaryRolledBack as rolled_back:
            report = {**rolled_back.report, "action": "canary rolled back", "message": str(rolled_back)}
            print(f"deploy: {rolled_back}")
    elif mode != "render":
        raise ChurnflowError(f"deploy_mode: expected render or apply, got {mode!r}")
    if rollout_report_path:
        Path(rollout_report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(rollout_report_path).write_text(json.dumps(report, indent=2) + "\n")
    return manifest
