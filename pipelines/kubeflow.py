"""Compiling the pipeline to YAML and handing it to a Kubeflow Pipelines endpoint (kfp.Client)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from churnflow.errors import ChurnflowError


def compile_pipeline(output: str | Path, image: str | None = None, pipeline: Any = None) -> Path:
    """Writes the pipeline spec (default: the training pipeline); every component runs in `image`.

    The image is set on the compiled spec's executors rather than at import time, so one process can
    compile for several registries.
    """
    from kfp import compiler

    from churnflow.pipelines.churn_pipeline import churn_training_pipeline

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline or churn_training_pipeline, str(output))
    if image:
        documents = list(yaml.safe_load_all(output.read_text()))
        for executor in documents[0]["deploymentSpec"]["executors"].values():
            executor["container"]["image"] = image
        output.write_text(yaml.safe_dump_all(documents, sort_keys=True))
    return output


def load_compiled(path: str | Path) -> Any:
    """Loads a compiled pipeline back (raises if kfp cannot read it)."""
    from kfp import components

    try:
        return components.load_component_from_file(str(path))
    except Exception as error:
        raise ChurnflowError(f"{path}: not a compiled KFP pipeline ({error})") from None


def _client(host: str, namespace: str = "") -> Any:
    import warnings

    from kfp import Client

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
            return Client(host=host or None, namespace=namespace or "kubeflow")
    except Exception as error:  # connection refused, auth, a host that is not KFP
        raise ChurnflowError(
            f"kubeflow: cannot reach the Kubeflow Pipelines API at {host or '(in-cluster)'} "
            f"({str(error).splitlines()[0][:200]})"
        ) from None


@contextlib.contextmanager
def kubeflow_session(host: str, namespace: str, image: str | None, what: str) -> Iterator[tuple[Any, Path]]:
    """A compiled package and a connected kfp.Client; any client failure becomes one line naming `what`."""
    with tempfile.TemporaryDirectory() as directory:
        package = compile_pipeline(Path(directory) / "churn_pipeline.yaml", image=image)
        client = _client(host, namespace)
        try:
            yield client, package
        except ChurnflowError:
            raise
        except Exception as error:
            raise ChurnflowError(f"kubeflow: {what} was not created ({str(error).splitlines()[0][:300]})") from None


def submit_run(
    host: str,
    arguments: dict[str, Any],
    *,
    namespace: str = "",
    experiment: str = "churnflow",
    run_name: str = "",
    image: str | None = None,
) -> str:
    """Compiles the pipeline and starts one run of it now; returns the run id."""
    with kubeflow_session(host, namespace, image, "the run") as (client, package):
        run = client.create_run_from_pipeline_package(
            str(package),
            arguments=arguments,
            run_name=run_name or None,
            experiment_name=experiment,
            namespace=namespace or None,
        )
    return str(run.run_id)


def schedule_runs(
    host: str,
    cron: str,
    arguments: dict[str, Any],
    *,
    namespace: str = "",
    experiment: str = "churnflow",
    job_name: str = "churnflow-retraining",
    image: str | None = None,
    max_concurrency: int = 1,
) -> str:
    """Compiles the pipeline and creates a recurring run (retraining on a cron schedule); returns its id.

    `cron` is KFP's six-field cron (seconds first): "0 0 3 * * *" is every day at 03:00. Caching is off,
    so each scheduled run really retrains on the data of the day.
    """
    if len(cron.split()) != 6:
        raise ChurnflowError(f"--cron {cron!r}: expected KFP's six fields, seconds first (e.g. '0 0 3 * * *')")
    with kubeflow_session(host, namespace, image, "the recurring run") as (client, package):
        experiment_id = client.create_experiment(experiment, namespace=namespace or None).experiment_id
        job = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=job_name,
            cron_expression=cron,
            max_concurrency=max_concurrency,
            pipeline_package_path=str(package),
            params=arguments,
            enable_caching=False,
        )
    return str(job.recurring_run_id)


def upload_pipeline(
    host: str, name: str, *, namespace: str = "", image: str | None = None, description: str = ""
) -> str:
    """Compiles the pipeline and uploads it to the KFP API as a named pipeline; returns its id."""
    with kubeflow_session(host, namespace, image, "the pipeline") as (client, package):
        pipeline = client.upload_pipeline(
            str(package),
            pipeline_name=name,
            description=description or "churnflow: train, evaluate, deploy",
            namespace=namespace or None,
        )
    return str(pipeline.pipeline_id)
