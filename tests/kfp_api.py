"""A Kubeflow Pipelines v2beta1 API double on pytest-httpserver, for the real kfp.Client.

It answers the calls churnflow makes (healthz, experiments, runs, recurring runs, pipeline upload)
and enforces what KFP's API server enforces for them, in its error format ({"error", "code",
"message"}): a bearer token when one is configured (401 without, 403 with another); in multi-user
mode, a namespace on experiments and their listing, runs only in an experiment of a namespace the
token may use (403 otherwise); the body fields each call requires; a pipeline spec that parses as
KFP's PipelineSpec, whose runtime parameters it declares and whose required ones are given; six-
field cron and max_concurrency 1..10 on recurring runs; unique pipeline names. healthz reports a
configurable backend version in `tag_name`, as the API server does.

An older backend accepts a run whose spec it cannot execute and fails it later in the driver; the
double does the same: such a run is created in state FAILED with the driver's error. It reads the
spec on its own terms (a task consuming a ParallelFor's output; Secret-as-env and pod-metadata fields;
run placeholders a pre-2.5 driver leaves as text), independently of churnflow's table in
pipelines/backends.py; `driver_error` names the KFP source of each rule.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

# google.rpc codes the API server puts in its error bodies
_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 500: 13}
_REQUIRED_TYPES = {
    "STRING": str,
    "NUMBER_INTEGER": (int, float),
    "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": bool,
    "LIST": list,
    "STRUCT": dict,
}


# A KFP job/task placeholder as the SDK writes it into a task input (dsl.PIPELINE_JOB_NAME_PLACEHOLDER, ...).
_PLACEHOLDER = re.compile(r"\{\{\$\.pipeline_(job|task)_[a-z_]+\}\}")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class KfpApi:
    """The double's state and settings; `calls` records (method, path, query, body) of every request."""

    server: HTTPServer
    version: str = "2.14.0"
    multi_user: bool = False
    token: str | None = None
    # multi-user: the namespaces the token may act in (the profile its service account is bound to)
    namespaces: set[str] = field(default_factory=set)
    fail_with: int | None = None  # answer every call with this status (an API in trouble)
    calls: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    recurring_runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.server.expect_request(re.compile(".*")).respond_with_handler(self._handle)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def posted(self, path: str) -> list[Any]:
        return [body for method, p, _, body in self.calls if (method, p) == ("POST", path)]

    # -- dispatch -------------------------------------------------------------------------------------

    def _handle(self, request: Request) -> Response:
        query = dict(request.args)
        if request.path == "/apis/v2beta1/pipelines/upload":
            body: Any = {"files": {name: f.read().decode(errors="replace") for name, f in request.files.items()}}
        else:
            body = request.get_json(silent=True) if request.data else None
        with self._lock:
            self.calls.append((request.method, request.path, query, body))
            try:
                if self.fail_with:
                    raise ApiError(self.fail_with, "internal error: the database is unavailable")
                return self._json(self._route(request, query, body))
            except ApiError as error:
                code = _CODES.get(error.status, 2)
                payload = {"error": error.message, "code": code, "message": error.message, "details": []}
                return self._json(payload, error.status)

    @staticmethod
    def _json(payload: Any, status: int = 200) -> Response:
        return Response(json.dumps(payload), status=status, content_type="application/json")

    def _route(self, request: Request, query: dict[str, str], body: Any) -> dict[str, Any]:
        method, path = request.method, request.path
        if (method, path) == ("GET", "/apis/v2beta1/healthz"):  # the API server answers it without auth
            return {
                "commit_sha": "0123abc",
                "tag_name": self.version,
                "multi_user": self.multi_user,
                "pipeline_store": "database",
            }
        self._authenticate(request)
        routes = {
            ("GET", "/apis/v2beta1/experiments"): self._list_experiments,
            ("POST", "/apis/v2beta1/experiments"): self._create_experiment,
            ("POST", "/apis/v2beta1/runs"): self._create_run,
            ("POST", "/apis/v2beta1/recurringruns"): self._create_recurring_run,
            ("POST", "/apis/v2beta1/pipelines/upload"): self._upload_pipeline,
        }
        handler = routes.get((method, path))
        if handler is None:
            raise ApiError(404, f"Not Found: {method} {path}")
        return handler(query, body)

    # -- rules ----------------------------------------------------------------------------------------

    def _authenticate(self, request: Request) -> None:
        if self.token is None:
            return
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            raise ApiError(401, "Unauthenticated: no bearer token in the Authorization header")
        if header[7:].strip() != self.token:
            raise ApiError(403, "PermissionDenied: the token does not authenticate a known service account")

    def _authorize(self, namespace: str, verb: str) -> None:
        if self.multi_user and namespace not in self.namespaces:
            raise ApiError(403, f"PermissionDenied: not allowed to {verb} in namespace {namespace!r}")

    def _list_experiments(self, query: dict[str, str], _: Any) -> dict[str, Any]:
        namespace = query.get("namespace", "")
        if self.multi_user:
            if not namespace:
                raise ApiError(400, "Invalid input error: in multi-user mode, ListExperiments needs a namespace")
            self._authorize(namespace, "list experiments")
        names: list[str] = []
        if query.get("filter"):
            try:
                predicates = json.loads(query["filter"]).get("predicates", [])
            except ValueError:
                raise ApiError(400, "Invalid input error: the filter is not valid JSON") from None
            names = [
                p.get("stringValue", p.get("string_value", "")) for p in predicates if p.get("key") == "display_name"
            ]
        found = [
            e
            for e in self.experiments.values()
            if (not names or e["display_name"] in names) and (not self.multi_user or e["namespace"] == namespace)
        ]
        return {"experiments": found, "total_size": len(found)} if found else {}

    def _create_experiment(self, _: dict[str, str], body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not body.get("display_name"):
            raise ApiError(400, "Invalid input error: experiment display_name is empty")
        namespace = body.get("namespace") or ""
        if self.multi_user:
            if not namespace:
                raise ApiError(400, "Invalid input error: in multi-user mode, an experiment needs a namespace")
            self._authorize(namespace, "create experiments")
        else:
            namespace = ""  # single-user mode ignores it
        experiment_id = f"exp-{next(self._ids)}"
        experiment = {
            "experiment_id": experiment_id,
            "display_name": body["display_name"],
            "namespace": namespace,
            "storage_state": "AVAILABLE",
        }
        self.experiments[experiment_id] = experiment
        return experiment

    def _experiment_of(self, body: dict[str, Any], what: str) -> dict[str, Any] | None:
        experiment_id = body.get("experiment_id") or ""
        if not experiment_id:
            if self.multi_user:
                raise ApiError(400, f"Invalid input error: in multi-user mode, a {what} needs an experiment_id")
            return None
        experiment = self.experiments.get(experiment_id)
        if experiment is None:
            raise ApiError(404, f"NotFoundError: experiment {experiment_id} not found")
        self._authorize(experiment["namespace"], f"create {what}s")
        return experiment

    def _parses_on_this_backend(self, spec: dict[str, Any]) -> None:
        """Before 2.4 the API server parses specs with a proto without the resource string fields
        (kubeflow/pipelines PR 11075 added resourceCpuLimit and the rest to api/v2alpha1/pipeline_spec.proto;
        the API server's go.mod pins that api module at 58ce09e (2023-10) up to 2.3.0 and at a version with
        them from 2.4.0), so it refuses the spec at creation."""
        backend = self._backend()
        if backend is None or backend >= (2, 4):
            return
        for executor in spec.get("deploymentSpec", {}).get("executors", {}).values():
            for name in sorted(executor.get("container", {}).get("resources", {})):  # one answer, every run
                if name.startswith("resource"):
                    raise ApiError(
                        400, f'Invalid input error: failed to parse the pipeline spec: unknown field "{name}"'
                    )

    @staticmethod
    def _spec(body: dict[str, Any]) -> dict[str, Any]:
        """The pipeline spec of a run body, checked as KFP's PipelineSpec (platform spec beside it)."""
        spec = body.get("pipeline_spec")
        if not spec:
            raise ApiError(400, "Invalid input error: neither pipeline_spec nor pipeline_version_reference given")
        if "pipeline_spec" in spec:
            try:
                json_format.ParseDict(spec.get("platform_spec", {}), pipeline_spec_pb2.PlatformSpec())
            except json_format.ParseError as error:
                raise ApiError(400, f"Invalid input error: platform spec: {error}") from None
            spec = spec["pipeline_spec"]
        try:
            json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
        except json_format.ParseError as error:
            raise ApiError(400, f"Invalid input error: pipeline spec: {error}") from None
        if not spec.get("pipelineInfo", {}).get("name") or "root" not in spec:
            raise ApiError(400, "Invalid input error: pipeline spec without pipelineInfo.name or root")
        return spec

    @staticmethod
    def _check_parameters(spec: dict[str, Any], runtime_config: dict[str, Any] | None) -> None:
        declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
        given = (runtime_config or {}).get("parameters", {}) or {}
        for name, value in given.items():
            if name not in declared:
                raise ApiError(400, f"Invalid input error: parameter {name!r} is not an input of the pipeline")
            expected = _REQUIRED_TYPES.get(declared[name].get("parameterType", ""), object)
            if isinstance(value, bool) and expected is not bool and expected is not object:
                raise ApiError(400, f"Invalid input error: parameter {name!r}: expected a non-boolean")
            if not isinstance(value, expected):
                raise ApiError(400, f"Invalid input error: parameter {name!r} has the wrong type")
        for name, definition in declared.items():
            if name not in given and "defaultValue" not in definition and not definition.get("isOptional"):
                raise ApiError(400, f"Invalid input error: required parameter {name!r} is missing")

    def _backend(self) -> tuple[int, int] | None:
        match = re.match(r"v?(\d+)\.(\d+)", self.version)
        return (int(match.group(1)), int(match.group(2))) if match else None

    def driver_error(self, body: dict[str, Any]) -> str | None:
        """What this backend's driver and launcher break on for this spec (None: it runs). Each rule names
        the KFP source it follows; the first one that applies answers."""
        backend = self._backend()
        if backend is None:
            return None
        spec = body["pipeline_spec"]
        platform = spec.get("platform_spec", {}) if "pipeline_spec" in spec else {}
        spec = spec.get("pipeline_spec", spec)
        dags = [spec["root"]["dag"], *(c["dag"] for c in spec.get("components", {}).values() if "dag" in c)]
        if backend < (2, 14):
            # kubeflow/pipelines PR 11725 (driver resolves a ParallelFor's collected outputs), first in 2.14.0
            for dag in dags:
                loops = {name for name, task in dag.get("tasks", {}).items() if "parameterIterator" in task}
                for task in dag.get("tasks", {}).values():
                    for value in task.get("inputs", {}).get("parameters", {}).values():
                        if value.get("taskOutputParameter", {}).get("producerTask") in loops:
                            return "failed to resolve the outputs of a ParallelFor (collected outputs need 2.14)"
        if backend < (2, 4):
            # backend/src/v2/driver/driver.go before PR 11196 (2.4.0): resolveInputs reads a producer's
            # output parameters from its execution, and a DAG's execution (dsl.If/dsl.Else branches
            # joined by dsl.OneOf, a nested pipeline) records none, so the consumer fails
            for dag in dags:
                for task_name, task in sorted(dag.get("tasks", {}).items()):
                    for value in task.get("inputs", {}).get("parameters", {}).values():
                        output = value.get("taskOutputParameter", {})
                        producer = dag.get("tasks", {}).get(output.get("producerTask", ""), {})
                        if "dag" in spec.get("components", {}).get(producer.get("componentRef", {}).get("name"), {}):
                            return (
                                f"KFP driver {backend[0]}.{backend[1]}: task {task_name!r}: cannot find output "
                                f"parameter key {output['outputParameterKey']!r} in producer task "
                                f"{output['producerTask']!r}"
                            )
        if backend < (2, 5):
            # backend/src/v2/driver/driver.go resolves {{$.pipeline_job_name}} and the other job/task
            # placeholders from 2.5.0 on (PR 11599); the 2.2-2.4 drivers hand a constant to the task as
            # it is. A real backend runs such a task, whose step then writes the literal text where the
            # run name goes (labels, annotations, model metadata); the double fails the run instead, so
            # that no test can miss it.
            for dag in dags:
                for task_name, task in sorted(dag.get("tasks", {}).items()):
                    for name, value in sorted(task.get("inputs", {}).get("parameters", {}).items()):
                        constant = value.get("runtimeValue", {}).get("constant")
                        if isinstance(constant, str) and _PLACEHOLDER.search(constant):
                            return (
                                f"KFP driver {backend[0]}.{backend[1]}: task {task_name!r} would get input "
                                f"{name!r} as the literal text {constant!r} (run placeholders need 2.5)"
                            )
        executors = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
        for config in executors.values():
            if "podMetadata" in config and backend < (2, 1):
                # backend/src/v2/cmd/driver/main.go (2.0.0) unmarshals --kubernetes_config with jsonpb,
                # which refuses unknown fields, into kubernetes_platform bd9f74e (no pod_metadata; PR 10393, 2.1.0)
                return 'KFP driver: failed to unmarshal Kubernetes config: unknown field "podMetadata"'
            for secret in config.get("secretAsEnv", []):
                if "optional" in secret and backend < (2, 15):
                    # kubeflow/pipelines issue 12495: the field arrived in 2.15.0's kubernetes_platform
                    return 'KFP driver: failed to unmarshal Kubernetes config: unknown field "optional"'
                if "secretNameParameter" in secret and backend < (2, 5):
                    # kubeflow/pipelines issue 11935: the field arrived in 2.5.0's kubernetes_platform
                    return 'KFP driver: failed to unmarshal Kubernetes config: unknown field "secretNameParameter"'
        return None

    def _create_run(self, _: dict[str, str], body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not body.get("display_name"):
            raise ApiError(400, "Invalid input error: run display_name is empty")
        experiment = self._experiment_of(body, "run")
        spec = self._spec(body)
        self._parses_on_this_backend(spec)
        self._check_parameters(spec, body.get("runtime_config"))
        run_id = f"run-{next(self._ids)}"
        run = {
            **body,
            "run_id": run_id,
            "experiment_id": experiment["experiment_id"] if experiment else "default",
            "state": "PENDING",
        }
        failure = self.driver_error(body)
        if failure:
            run.update(state="FAILED", error={"message": failure})
        self.runs[run_id] = run
        return {k: v for k, v in run.items() if k != "pipeline_spec"}

    def _create_recurring_run(self, _: dict[str, str], body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not body.get("display_name"):
            raise ApiError(400, "Invalid input error: recurring run display_name is empty")
        experiment = self._experiment_of(body, "recurring run")
        spec = self._spec(body)
        self._parses_on_this_backend(spec)
        self._check_parameters(spec, body.get("runtime_config"))
        cron = (body.get("trigger") or {}).get("cron_schedule", {}).get("cron", "")
        if len(cron.split()) != 6:
            raise ApiError(400, f"Invalid input error: cron {cron!r} is not a six-field cron expression")
        concurrency = int(body.get("max_concurrency") or 0)
        if not 1 <= concurrency <= 10:
            raise ApiError(400, "Invalid input error: max concurrency of a recurring run must be between 1 and 10")
        job_id = f"job-{next(self._ids)}"
        job = {**body, "recurring_run_id": job_id, "experiment_id": experiment["experiment_id"] if experiment else ""}
        job["runs_would_fail_with"] = self.driver_error(body)
        self.recurring_runs[job_id] = job
        return {k: v for k, v in job.items() if k != "pipeline_spec"}

    def _upload_pipeline(self, query: dict[str, str], body: Any) -> dict[str, Any]:
        text = body["files"].get("uploadfile")
        if text is None:
            raise ApiError(400, "Invalid input error: no 'uploadfile' in the multipart body")
        namespace = query.get("namespace", "")
        if namespace:
            self._authorize(namespace, "upload pipelines")
        try:
            documents = [d for d in yaml.safe_load_all(text) if d]
            json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec())
        except Exception as error:
            raise ApiError(400, f"Invalid input error: the uploaded file is not a pipeline spec ({error})") from None
        name = query.get("name") or documents[0]["pipelineInfo"]["name"]
        if any(p["display_name"] == name and p["namespace"] == namespace for p in self.pipelines.values()):
            raise ApiError(409, f"Already exist error: a pipeline named {name!r} exists")
        pipeline_id = f"pipeline-{next(self._ids)}"
        self.pipelines[pipeline_id] = {"pipeline_id": pipeline_id, "display_name": name, "namespace": namespace}
        self.pipelines[pipeline_id]["spec"] = documents
        return {"pipeline_id": pipeline_id, "display_name": name, "namespace": namespace}


@pytest.fixture
def kfp_api() -> Iterator[KfpApi]:
    """A single-user KFP API of the newest backend without auth; tests change its settings as needed."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    try:
        yield KfpApi(server)
    finally:
        server.clear()
        server.stop()
