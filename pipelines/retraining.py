"""Retraining on drift: start the training pipeline on a Kubeflow Pipelines endpoint with the latest data.

The drift pipeline's `retrain_op` step (drift_pipeline.py, after the drift check found drift) calls
`start_retraining`. It
compiles and submits the training pipeline, so it lives with the pipelines, above the components: the
drift check itself (components/drift_check) knows nothing of pipelines.

On a cluster the retrain runs inside a drift-pipeline pod: it talks to the in-cluster KFP API with
the pod's projected service-account token (multi-user Kubeflow refuses it otherwise), creates the
run in the profile's namespace (the pod's own unless given), compiles the training pipeline for the
backend the API reports, on the image the drift pipeline runs (a parameter whose default is set at
compile time), and passes the deploy action, data URI and dataset config on.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from churnflow.core.errors import ChurnflowError
from churnflow.pipelines.kubeflow import DEFAULT_EXPERIMENT, DEFAULT_SERVICE_ACCOUNT, kubeflow_session
from churnflow.pipelines.parameters import current_name

# The namespace a pod runs in (in a Kubeflow profile: the profile), as Kubernetes mounts it.
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def in_kfp_runtime() -> bool:
    """Inside a running KFP task the `kfp` package is the executor's trimmed runtime: no kfp.Client,
    no dsl.component (so not even the training pipeline's module imports)."""
    return os.environ.get("_KFP_RUNTIME", "").lower() == "true"


def pipeline_parameters(package: str | Path) -> dict[str, str]:
    """Name → KFP parameter type of every input of a compiled pipeline."""
    spec = next(yaml.safe_load_all(Path(package).read_text()))  # the pipeline spec; a platform spec may follow
    parameters = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return {name: str(definition.get("parameterType", "STRING")) for name, definition in parameters.items()}


def retraining_arguments(
    data_uri: str, training_arguments: str, parameters: dict[str, str], base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The training pipeline's arguments: `base` (deploy action, dataset config, namespace of the running
    pipeline), `data_uri` (the latest customer table), then any overrides given as a JSON object,
    each checked against the pipeline's own parameters."""
    try:
        overrides = json.loads(training_arguments or "{}")
    except ValueError as error:
        raise ChurnflowError(f"training_arguments: not valid JSON ({error})") from None
    if not isinstance(overrides, dict):
        raise ChurnflowError("training_arguments: expected a JSON object of pipeline parameter names to values")
    overrides = {current_name(name): value for name, value in overrides.items()}
    unknown = sorted(set(overrides) - set(parameters))
    if unknown:
        raise ChurnflowError(
            f"training_arguments: {unknown[0]!r} is not a training pipeline parameter "
            f"(expected one of: {', '.join(sorted(parameters))})"
        )
    arguments = {name: value for name, value in (base or {}).items() if value != "" and name in parameters}
    if data_uri:
        arguments["data_uri"] = data_uri
    arguments.update(overrides)
    return arguments


def profile_namespace(namespace: str = "") -> str:
    """The Kubeflow profile to run in: the one given, else the namespace this pod runs in."""
    if namespace:
        return namespace
    try:
        return POD_NAMESPACE_FILE.read_text().strip()
    except OSError:
        return ""


def run_name(report: dict[str, Any]) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    return f"retrain {report.get('model_name', 'churn')} on drift {when}"


def start_retraining(
    host: str,
    data_uri: str = "",
    training_arguments: str = "{}",
    *,
    namespace: str = "",
    experiment: str = DEFAULT_EXPERIMENT,
    name: str = "",
    image: str = "",
    deploy_action: str = "",
    dataset_config: str = "",
    service_account: str = DEFAULT_SERVICE_ACCOUNT,
) -> tuple[str, dict[str, Any]]:
    """Submits the training pipeline to the KFP API at `host` (empty: the in-cluster API) with the
    latest data; returns the run id and the arguments. Caching is off, so the run really retrains.

    The run goes into the profile `namespace` (empty: this pod's), on `image` (empty: the default
    train image), deploying with `deploy_action` into the same namespace, as `service_account`; the
    projected token ($KF_PIPELINES_SA_TOKEN_PATH) authenticates it when mounted.
    Inside a KFP task (the retrain component) it runs in a child process: see in_kfp_runtime."""
    if in_kfp_runtime():
        options = {"host": host, "data_uri": data_uri, "training_arguments": training_arguments}
        options.update(namespace=namespace, experiment=experiment, name=name, image=image)
        options.update(deploy_action=deploy_action, dataset_config=dataset_config, service_account=service_account)
        return _start_in_child(options)
    profile = profile_namespace(namespace)
    base = {"deploy_action": deploy_action, "dataset_config": dataset_config, "namespace": profile}
    with kubeflow_session(host, profile, image or None, "the retraining run") as session:
        arguments = retraining_arguments(data_uri, training_arguments, pipeline_parameters(session.package), base)
        run = session.client.create_run_from_pipeline_package(
            str(session.package),
            arguments=arguments,
            run_name=name or None,
            experiment_name=experiment or DEFAULT_EXPERIMENT,
            namespace=profile or None,
            enable_caching=False,
            service_account=service_account or None,
        )
    return str(run.run_id), arguments


def _start_in_child(options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """start_retraining in a child Python without the KFP runtime flag (where the full SDK imports)."""
    env = {k: v for k, v in os.environ.items() if k != "_KFP_RUNTIME"}
    command = [sys.executable, "-m", "churnflow.pipelines.retraining", json.dumps(options)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ChurnflowError(f"starting the training pipeline failed: {reason}")
    result = json.loads(lines[-1])
    return result["run_id"], result["arguments"]


if __name__ == "__main__":  # the child process of _start_in_child
    run_id, used = start_retraining(**json.loads(sys.argv[1]))
    print(json.dumps({"run_id": run_id, "arguments": used}))
