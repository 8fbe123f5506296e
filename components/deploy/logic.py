"""Deploy: release the evaluated model. Runs only when evaluate said `deploy`.

Here it renders the InferenceService for the new model and, in local mode, publishes the model
directory atomically where the local model server loads it; with `deploy_action` "apply" it rolls the
InferenceService out (`roll_out`, the same function `churnflow deploy` calls).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from churnflow.components.deploy.canary import DEFAULT_CANARY, NO_CANARY, CanaryPolicy
from churnflow.components.deploy.inferenceservice import (
    DEFAULT_STORAGE_SERVICE_ACCOUNT,
    SERVERLESS,
    STORE_SECRET,
    check_deployment_mode,
    render_inferenceservice,
    to_yaml,
)
from churnflow.components.deploy.kubernetes import READY_TIMEOUT_SECONDS
from churnflow.core.artifact import EVALUATION_FILE, METADATA_FILE, publish_directory, verify_files
from churnflow.core.errors import ChurnflowError

MANIFEST_FILE = "inferenceservice.yaml"
# What the step does with the rendered InferenceService (parameter `deploy_action`), beside
# `deployment_mode`, which is how KServe runs it (Serverless or RawDeployment).
RENDER, APPLY = "render", "apply"
ACTIONS = (RENDER, APPLY)
CANARY_ROLLED_BACK = "canary rolled back"


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


def inferenceservice_for(
    model_uri: str,
    *,
    name: str,
    namespace: str,
    image: str,
    model_version: str,
    metadata_sha256: str,
    pipeline_run: str = "",
    service_account: str = DEFAULT_STORAGE_SERVICE_ACCOUNT,
    deployment_mode: str = SERVERLESS,
    store_secret: str = STORE_SECRET,
) -> dict[str, Any]:
    """The InferenceService manifest of a model directory URI: what the step writes as its artifact and
    `churnflow deploy --dry-run` prints (a canary's share is added only when it is applied)."""
    return render_inferenceservice(
        name=name,
        namespace=namespace,
        storage_uri=model_uri,
        image=image,
        model_version=model_version,
        pipeline_run=pipeline_run,
        service_account=service_account,
        deployment_mode=deployment_mode,
        metadata_sha256=metadata_sha256,
        store_secret=store_secret,
    )


def roll_out(
    manifest: dict[str, Any],
    *,
    canary_percent: int = NO_CANARY,
    canary: CanaryPolicy = DEFAULT_CANARY,
    ready_timeout_seconds: float = READY_TIMEOUT_SECONDS,
    poll_seconds: float = 5,
    api: Any = None,
    served_url: str = "",
) -> dict[str, Any]:
    """Creates or patches the InferenceService and waits until the new model serves (components/deploy/
    kubernetes.py); returns the rollout report. The deploy step and `churnflow deploy` both roll out here.

    A canary judged worse than the stable model is rolled back and *reported* (action "canary rolled
    back", with its numbers and `message`), as an evaluation gate that says "do not deploy" is: the
    caller decides whether that fails (the CLI exits 2; the step succeeds). A rollout that fails
    (timeout, crash loop, API error) raises. `api` defaults to the pod's service account, else the
    kubeconfig; `served_url` replaces the in-cluster address the new model's version is read from."""
    from churnflow.components.deploy.kubernetes import CanaryRolledBack, apply_inferenceservice, custom_objects_api

    try:
        rollout = apply_inferenceservice(
            api if api is not None else custom_objects_api(),
            manifest,
            canary_percent=canary_percent,
            timeout_seconds=ready_timeout_seconds,
            poll_seconds=poll_seconds,
            canary_policy=canary,
            served_url=served_url,
        )
    except CanaryRolledBack as rolled_back:
        return {**rolled_back.report, "action": CANARY_ROLLED_BACK, "message": str(rolled_back)}
    return rollout.report()


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
    action: str = RENDER,
    canary_percent: int = NO_CANARY,
    ready_timeout_seconds: float = READY_TIMEOUT_SECONDS,
    service_account: str = DEFAULT_STORAGE_SERVICE_ACCOUNT,
    deployment_mode: str = SERVERLESS,
    store_secret: str = "",
    canary: CanaryPolicy = DEFAULT_CANARY,
    rollout_report_path: str | Path = "",
    poll_seconds: float = 5,
) -> dict[str, Any]:
    """Writes the InferenceService manifest; releases locally when `local_release_dir` is set, and with
    `action` "apply" rolls it out on the cluster (`roll_out`).

    Locally the manifest is also written beside the release (`<parent>/inferenceservice.yaml`) with
    storageUri pointing at it, which is what `churnflow run` leaves in its output directory.
    `deployment_mode` (Serverless or RawDeployment) is rendered as KServe's annotation, which wins over
    the cluster default, and decides whether a canary is possible. The rollout's outcome (with a canary's
    numbers and decision) is written as JSON to `rollout_report_path`: a canary judged worse than the
    stable model is rolled back and reported there, and the step succeeds, as an evaluation gate that says
    "do not deploy" does; a rollout that fails (timeout, crash loop, API error) fails the step.
    """
    check_deployment_mode(deployment_mode)  # before anything is released
    if action not in ACTIONS:
        raise ChurnflowError(f"deploy_action: expected {' or '.join(ACTIONS)}, got {action!r}")
    storage_uri = model_uri
    if local_release_dir:
        release_locally(model_dir, evaluation, local_release_dir)
        storage_uri = Path(local_release_dir).absolute().as_uri()
    manifest = inferenceservice_for(
        storage_uri,
        name=name,
        namespace=namespace,
        image=image,
        model_version=model_version,
        metadata_sha256=metadata_digest(model_dir),
        pipeline_run=pipeline_run,
        service_account=service_account,
        deployment_mode=deployment_mode,
        store_secret=store_secret,
    )
    text = to_yaml(manifest)
    Path(manifest_path).parent.mkdir(parents=True, exist_ok=True)
    Path(manifest_path).write_text(text)
    if local_release_dir:
        (Path(local_release_dir).parent / MANIFEST_FILE).write_text(text)
    report: dict[str, Any] = {"action": "rendered", "model_version": model_version}
    if action == APPLY:
        report = roll_out(
            manifest,
            canary_percent=canary_percent,
            canary=canary,
            ready_timeout_seconds=ready_timeout_seconds,
            poll_seconds=poll_seconds,
        )
        if report["action"] == CANARY_ROLLED_BACK:
            print(f"deploy: {report['message']}")
    if rollout_report_path:
        Path(rollout_report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(rollout_report_path).write_text(json.dumps(report, indent=2) + "\n")
    return manifest
