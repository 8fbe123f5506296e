"""Drift-check logic (plain Python; the KFP wrappers in component.py and `churnflow drift` call it).

`check` runs churnflow.drift over the store's window and writes the report (drift.json,
drift.html, drift.prom). `retraining_arguments` and `start_retraining` start the training pipeline
on a Kubeflow Pipelines endpoint through kfp.Client, with the latest data.
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

from churnflow.drift import DEFAULT_THRESHOLDS, Thresholds, run_check
from churnflow.drift_report import write_report
from churnflow.errors import ChurnflowError

DEFAULT_EXPERIMENT = "churnflow"


def check(
    store_url: str,
    model_dir: str | Path,
    report_dir: str | Path,
    *,
    model_name: str = "churn",
    window: int | None = 10_000,
    evaluation_path: str | Path | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """Runs the drift check and writes its report into `report_dir`; returns the report."""
    report = run_check(
        store_url,
        model_dir,
        model_name=model_name,
        window=window,
        evaluation_path=evaluation_path,
        thresholds=thresholds,
    )
    write_report(report, report_dir)
    return report


def in_kfp_runtime() -> bool:
    """Inside a running KFP task the `kfp` package is the executor's trimmed runtime: no kfp.Client,
    no dsl.component (so not even the training pipeline's module imports)."""
    return os.environ.get("_KFP_RUNTIME", "").lower() == "true"


def pipeline_parameters(package: str | Path) -> dict[str, str]:
    """Name → KFP parameter type of every input of a compiled pipeline."""
    spec = next(yaml.safe_load_all(Path(package).read_text()))  # the pipeline spec; a platform spec may follow
    parameters = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return {name: str(definition.get("parameterType", "STRING")) for name, definition in parameters.items()}


def retraining_arguments(data_uri: str, training_arguments: str, parameters: dict[str, str]) -> dict[str, Any]:
    """The training pipeline's arguments: `data_uri` (the latest customer table) plus any overrides
    given as a JSON object, each checked against the pipeline's own parameters."""
    try:
        overrides = json.loads(training_arguments or "{}")
    except ValueError as error:
        raise ChurnflowError(f"training_arguments: not valid JSON ({error})") from None
    if not isinstance(overrides, dict):
        raise ChurnflowError("training_arguments: expected a JSON object of pipeline parameter names to values")
    unknown = sorted(set(overrides) - set(parameters))
    if unknown:
        raise ChurnflowError(
            f"training_arguments: {unknown[0]!r} is not a training pipeline parameter "
            f"(expected one of: {', '.join(sorted(parameters))})"
        )
    arguments = dict(overrides)
    if data_uri:
        arguments["data_uri"] = data_uri
    return arguments


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
) -> tuple[str, dict[str, Any]]:
    """Submits the training pipeline to the KFP API at `host` (empty: the in-cluster default) with the
    latest data; returns the run id and the arguments. Caching is off, so the run really retrains.

    Inside a KFP task (the retrain component) it runs in a child process: see in_kfp_runtime."""
    if in_kfp_runtime():
        options = {"host": host, "data_uri": data_uri, "training_arguments": training_arguments}
        options.update(namespace=namespace, experiment=experiment, name=name)
        return _start_in_child(options)
    from churnflow.pipelines.kubeflow import kubeflow_session

    with kubeflow_session(host, namespace, None, "the retraining run") as (client, package):
        arguments = retraining_arguments(data_uri, training_arguments, pipeline_parameters(package))
        run = client.create_run_from_pipeline_package(
            str(package),
            arguments=arguments,
            run_name=name or None,
            experiment_name=experiment or DEFAULT_EXPERIMENT,
            namespace=namespace or None,
            enable_caching=False,
        )
    return str(run.run_id), arguments


def _start_in_child(options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """start_retraining in a child Python without the KFP runtime flag (where the full SDK imports)."""
    env = {k: v for k, v in os.environ.items() if k != "_KFP_RUNTIME"}
    command = [sys.executable, "-m", "churnflow.components.drift_check.logic", json.dumps(options)]
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
