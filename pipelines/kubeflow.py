"""Compiling a pipeline to YAML and handing it to a Kubeflow Pipelines endpoint (kfp.Client).

Every call first reads the backend's version from the API's healthz (`tag_name`) and compiles for
it (see backends.py): a Kubeflow 1.9/1.10 cluster (KFP 2.2 to 2.5) gets a DAG it runs, or one line
saying which feature needs which version. Runs are created with a service account (default the
`churnflow-pipeline` one manifests/rbac.yaml creates) and, in multi-user Kubeflow, in the profile's
namespace with the projected service-account token when one is mounted.
"""

from __future__ import annotations

import contextlib
import http
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from churnflow.core.errors import ChurnflowError
from churnflow.pipelines.backends import Version, adapt, check, parse_version, show

DEFAULT_SERVICE_ACCOUNT = "churnflow-pipeline"  # manifests/rbac.yaml
DEFAULT_EXPERIMENT = "churnflow"
# kfp.Client's `namespace` is where KFP is installed (its in-cluster address), never the profile.
KFP_INSTALL_NAMESPACE = "kubeflow"
IN_CLUSTER_HOST = f"http://ml-pipeline.{KFP_INSTALL_NAMESPACE}.svc.cluster.local:8888"
# Where Kubeflow projects a pipeline pod's token for the KFP API (PodDefault / the KFP launcher),
# and the environment variable that moves it (both kfp.client's own names).
TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
DEFAULT_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
HEALTHZ = "/apis/v2beta1/healthz"

PipelineChoice = Any  # a compiled-able pipeline (GraphComponent) or a function backend → pipeline


def _pipeline_for(pipeline: PipelineChoice | None, backend: Version | None, resources: Any) -> Any:
    from kfp.dsl import base_component

    from churnflow.pipelines.resources import rebuild, task_resources

    if pipeline is None:
        from churnflow.pipelines.churn_pipeline import training_pipeline

        pipeline = training_pipeline
    if isinstance(pipeline, base_component.BaseComponent):
        return rebuild(pipeline, resources)
    if resources is None:
        return pipeline(backend)
    with task_resources(resources):
        return pipeline(backend)


def compile_pipeline(
    output: str | Path,
    image: str | None = None,
    *,
    pipeline: PipelineChoice | None = None,
    backend: Version | None = None,
    resources: Any = None,
    arguments: dict[str, Any] | None = None,
) -> Path:
    """Writes the pipeline spec (default: the training pipeline) for KFP backend `backend` (None: the
    newest); every component runs in `image` (default: the train image); `resources` (a
    TaskResources) replaces the compute steps' CPU and memory requests and limits
    (pipelines/resources.py).

    `pipeline` is a @dsl.pipeline or a function from the backend version to one (the training
    pipeline chooses its tuning fan-in that way). The image is set on the compiled executors rather
    than at import time, so one process can compile for several registries. Raises a ChurnflowError
    naming the feature when the pipeline needs a newer backend. `arguments` are the run's: a backend
    before 2.4 reads resources only as constants, so resource parameters are fixed to them."""
    from kfp import compiler

    component = _pipeline_for(pipeline, backend, resources)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(component, str(output))
    if image is None and backend is None:
        return output
    documents = list(yaml.safe_load_all(output.read_text()))
    if image:
        for executor in documents[0]["deploymentSpec"]["executors"].values():
            if "container" in executor:
                executor["container"]["image"] = image
    if backend is not None:
        adapt(documents, backend, arguments)
        check(documents, backend, f"pipeline {documents[0]['pipelineInfo']['name']!r}")
    output.write_text(yaml.safe_dump_all(documents, sort_keys=True))
    return output


def token_path() -> str | None:
    """The KFP API token file: $KF_PIPELINES_SA_TOKEN_PATH, else Kubeflow's projected token if mounted."""
    path = os.environ.get(TOKEN_ENV, "")
    if path:
        if not Path(path).is_file():
            raise ChurnflowError(f"{TOKEN_ENV}={path}: no such token file")
        return path
    return DEFAULT_TOKEN_PATH if Path(DEFAULT_TOKEN_PATH).is_file() else None


def _cause(error: BaseException) -> str:
    """The root cause of a connection failure in words ("Connection refused"), not urllib3's repr."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        reason = getattr(current, "reason", None)
        current = reason if isinstance(reason, BaseException) else (current.__cause__ or current.__context__)
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return re.sub(r"\?\S*", "", text)  # a URL's query (KFP's URL-encoded filters) says nothing to a user


def _api_answer(status: int, reason: str, body: Any) -> str:
    """'answered 401 Unauthorized: <the server's message>' from an HTTP error answer."""
    message = ""
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if isinstance(body, str) and body.strip():
        try:
            parsed = json.loads(body)
            message = str(parsed.get("message") or parsed.get("error") or "") if isinstance(parsed, dict) else ""
        except ValueError:
            message = body.strip().splitlines()[0]
    try:
        reason = http.HTTPStatus(status).phrase  # servers spell it differently ("UNAUTHORIZED")
    except ValueError:
        reason = reason or ""
    answer = f"answered {status} {reason}".rstrip()
    return f"{answer}: {message}" if message else answer


def describe_error(error: BaseException) -> str:
    """One readable clause for any failure talking to the KFP API: the HTTP answer and the server's
    message, or the connection failure's cause."""
    import kfp_server_api

    if isinstance(error, kfp_server_api.ApiException) and error.status:
        return _api_answer(error.status, error.reason, error.body)
    return _cause(error)


def _headers() -> dict[str, str]:
    path = token_path()
    return {"Authorization": f"Bearer {Path(path).read_text().strip()}"} if path else {}


def read_backend_version(host: str, timeout: float = 15.0) -> Version | None:
    """The backend's version from its healthz `tag_name` (None when it says "unknown" or nothing).

    kfp.Client.get_kfp_healthz returns a model without tag_name (and retries five times five
    seconds apart), so the API is asked directly, once, with the same token."""
    import urllib3

    url = host.rstrip("/") + HEALTHZ
    try:
        response = urllib3.PoolManager(retries=False, timeout=timeout).request("GET", url, headers=_headers())
    except Exception as error:  # connection refused, DNS, TLS, timeout
        raise ChurnflowError(f"kubeflow: cannot reach the Kubeflow Pipelines API at {host}: {_cause(error)}") from None
    if response.status != 200:
        answer = _api_answer(response.status, response.reason, response.data)
        raise ChurnflowError(f"kubeflow: the Kubeflow Pipelines API at {host} {answer} (GET {HEALTHZ})")
    try:
        tag = str(json.loads(response.data).get("tag_name", ""))
    except (ValueError, AttributeError):
        raise ChurnflowError(f"kubeflow: {host}{HEALTHZ} did not answer as a Kubeflow Pipelines API does") from None
    try:
        return parse_version(tag)
    except ChurnflowError:
        return None


def _client(host: str) -> Any:
    import warnings

    from kfp import Client
    from kfp.client import ServiceAccountTokenVolumeCredentials

    path = token_path()
    credentials = ServiceAccountTokenVolumeCredentials(path) if path else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
            return Client(host=host, namespace=KFP_INSTALL_NAMESPACE, credentials=credentials)
    except Exception as error:
        raise ChurnflowError(
            f"kubeflow: cannot use the Kubeflow Pipelines API at {host}: {describe_error(error)}"
        ) from None


class Session(NamedTuple):
    """A connected kfp.Client, the package compiled for its backend, and that backend's version."""

    client: Any
    package: Path
    backend: Version | None


@contextlib.contextmanager
def kubeflow_session(
    host: str,
    namespace: str,
    image: str | None,
    what: str,
    *,
    pipeline: PipelineChoice | None = None,
    backend: Version | None = None,
    resources: Any = None,
    arguments: dict[str, Any] | None = None,
) -> Iterator[Session]:
    """Reads the backend's version (used unless `backend` is given), compiles `pipeline` (default: the
    training pipeline) for it and connects; any client failure becomes one line naming `what`.
    The version is read even when given: that one request, without retries, is also what tells an
    unreachable or failing API in one line (kfp.Client itself retries healthz for 25 seconds).

    `namespace` is the Kubeflow profile: callers put it on experiments, runs and uploads. An empty
    `host` is the in-cluster API. A backend that does not say its version gets the DAG for the
    oldest backend this project supports (it runs on every newer one)."""
    host = host or os.environ.get("KF_PIPELINES_ENDPOINT", "") or IN_CLUSTER_HOST
    reported = read_backend_version(host)
    detected = backend if backend is not None else reported
    compile_for = detected if detected is not None else (2, 0)
    with tempfile.TemporaryDirectory() as directory:
        try:
            package = compile_pipeline(
                Path(directory) / "pipeline.yaml",
                image=image,
                pipeline=pipeline,
                backend=compile_for,
                resources=resources,
                arguments=arguments,
            )
        except ChurnflowError as error:
            if detected is None:
                raise ChurnflowError(
                    f"{error} (the API at {host} does not report its version, so {show(compile_for)} was assumed; "
                    "name it with --kfp-backend)"
                ) from None
            raise
        client = _client(host)
        try:
            yield Session(client, package, detected)
        except ChurnflowError:
            raise
        except Exception as error:
            raise ChurnflowError(f"kubeflow: {what} was not created: {describe_error(error)}") from None


def submit_run(
    host: str,
    arguments: dict[str, Any],
    *,
    namespace: str = "",
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str = "",
    image: str | None = None,
    service_account: str = DEFAULT_SERVICE_ACCOUNT,
    backend: Version | None = None,
    pipeline: PipelineChoice | None = None,
    resources: Any = None,
) -> str:
    """Compiles the pipeline for the endpoint's backend and starts one run of it now; returns the run id."""
    with kubeflow_session(
        host, namespace, image, "the run", pipeline=pipeline, backend=backend, resources=resources, arguments=arguments
    ) as session:
        run = session.client.create_run_from_pipeline_package(
            str(session.package),
            arguments=arguments,
            run_name=run_name or None,
            experiment_name=experiment,
            namespace=namespace or None,
            service_account=service_account or None,
        )
    return str(run.run_id)


def schedule_runs(
    host: str,
    cron: str,
    arguments: dict[str, Any],
    *,
    namespace: str = "",
    experiment: str = DEFAULT_EXPERIMENT,
    job_name: str = "churnflow-retraining",
    image: str | None = None,
    max_concurrency: int = 1,
    service_account: str = DEFAULT_SERVICE_ACCOUNT,
    backend: Version | None = None,
    pipeline: PipelineChoice | None = None,
    resources: Any = None,
) -> str:
    """Compiles the pipeline and creates a recurring run (retraining on a cron schedule); returns its id.

    `cron` is KFP's six-field cron (seconds first): "0 0 3 * * *" is every day at 03:00. Caching is off,
    so each scheduled run really retrains on the data of the day.
    """
    if len(cron.split()) != 6:
        raise ChurnflowError(f"--cron {cron!r}: expected KFP's six fields, seconds first (e.g. '0 0 3 * * *')")
    with kubeflow_session(
        host,
        namespace,
        image,
        "the recurring run",
        pipeline=pipeline,
        backend=backend,
        resources=resources,
        arguments=arguments,
    ) as session:
        experiment_id = session.client.create_experiment(experiment, namespace=namespace or None).experiment_id
        job = session.client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=job_name,
            cron_expression=cron,
            max_concurrency=max_concurrency,
            pipeline_package_path=str(session.package),
            params=arguments,
            enable_caching=False,
            service_account=service_account or None,
        )
    return str(job.recurring_run_id)


def upload_pipeline(
    host: str,
    name: str,
    *,
    namespace: str = "",
    image: str | None = None,
    description: str = "",
    backend: Version | None = None,
    pipeline: PipelineChoice | None = None,
    resources: Any = None,
) -> str:
    """Compiles the pipeline for the endpoint's backend and uploads it as a named pipeline; returns its id."""
    with kubeflow_session(
        host, namespace, image, "the pipeline", pipeline=pipeline, backend=backend, resources=resources
    ) as session:
        uploaded = session.client.upload_pipeline(
            str(session.package),
            pipeline_name=name,
            description=description or "churnflow: train, evaluate, deploy",
            namespace=namespace or None,
        )
    return str(uploaded.pipeline_id)


def backend_option(text: str) -> Version | None:
    """--kfp-backend: "auto" (read it from the API) → None; otherwise a version such as 2.4."""
    return None if text.strip().lower() in ("", "auto") else parse_version(text)
