"""Issue 21 item 1 and defect 2c: the images themselves, run in a real Docker engine.

scripts/containers.sh (run by scripts/test.sh, and again here: with the layer cache it takes seconds)
installs and starts Docker when it runs as root, makes a base image where python:3.12-slim cannot be
pulled, and builds the train, serve and storage-initializer images. Then:

- the serve image runs exactly as the rendered InferenceService's predictor container: its args, env,
  container securityContext and emptyDir mounts, the image's own non-root user, a read-only root
  filesystem, and /mnt/models filled first by KServe's storage-initializer code (kserve-storage) in a
  container of its own, from an S3 server (moto), through a volume both containers share;
- the train image lets its own user write where the KFP 2.2 launcher puts artifacts (defect 2c);
- the training, scoring and drift pipelines run through kfp.local's DockerRunner in the train image,
  as its own user, with no entrypoint or user override.

Without Docker every test here fails with one line saying what is missing; none is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from churnflow.components.deploy.inferenceservice import render_inferenceservice
from churnflow.core.artifact import read_metadata, sha256_file, write_metadata
from churnflow.core.config import config_to_json, load_config
from churnflow.core.synthetic import synthetic_customers

from .conftest import CHURNFLOW, free_port
from .kfp_api import KfpApi
from .s3_server import S3Server
from .test_scoring_pipeline import CONFIG as SCORING_CONFIG

pytestmark = [pytest.mark.containers, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
# Its own bucket on the session's S3 server: other tests list the "models" bucket and must not see these.
CONTAINER_BUCKET = "container-models"
CACHE = Path(os.environ.get("CHURNFLOW_CACHE", ROOT / ".cache" / "containers"))
TRAIN_IMAGE, SERVE_IMAGE = "churnflow-train:test", "churnflow-serve:test"
INITIALIZER_IMAGE = "churnflow-storage-initializer:test"
# Debian's client matches its 20.10 engine; a newer client elsewhere on PATH would do as well.
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").is_file() else "docker"
ROW = {"tenure": 12, "usage": 50, "age": 30, "monthly_charges": 70, "contract_type": "Month-to-month"}
TYPES = {"tenure": "INT64", "usage": "FP64", "age": "INT64", "monthly_charges": "FP64", "contract_type": "BYTES"}


def docker(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        pytest.fail(f"docker {' '.join(args[:2])} failed: {result.stderr.strip()[-2000:]}", pytrace=False)
    return result


@pytest.fixture(scope="module")
def images() -> dict[str, Any]:
    """The built images, or one line saying why Docker cannot be had (a failure, never a skip)."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts/containers.sh")], capture_output=True, text=True, timeout=1500, cwd=ROOT
    )
    state_file = CACHE / "containers.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    if done.returncode or not state or state.get("error"):
        reason = state.get("error") or (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.fail(f"containers: {reason}", pytrace=False)
    return state


def test_the_build_lock_is_free_once_the_images_are_built(images: dict[str, Any]) -> None:
    """scripts/test.sh builds in the background and this module's fixture builds again, waiting on the
    lock: if anything the build leaves running (dockerd, started when the engine was down) kept the lock's
    descriptor, every later build would wait until it timed out (CI at 1854896: 25 min, 8 errors)."""
    held = subprocess.run(["flock", "-n", str(CACHE / "lock"), "true"], capture_output=True, timeout=30)
    holders = [fd.parent.parent.name for fd in Path("/proc").glob("[0-9]*/fd/*") if _points_to(fd, CACHE / "lock")]
    assert held.returncode == 0, f"the build lock {CACHE / 'lock'} is still held, by pids {holders}"


def _points_to(fd: Path, target: Path) -> bool:
    try:
        return Path(fd.readlink()) == target.resolve()
    except OSError:
        return False


# -- the serve image as the InferenceService's predictor container ------------------------------------


def storage_env(endpoint: str) -> dict[str, str]:
    """The S3 environment KServe's controller gives the storage initializer from manifests/storage.yaml's
    Secret (kserve pkg/credentials/s3, 0.21: keys from the data, the rest from the annotations),
    with the endpoint pointed at the test's S3 server."""
    secret = next(d for d in yaml.safe_load_all((ROOT / "manifests/storage.yaml").read_text()) if d["kind"] == "Secret")
    notes = secret["metadata"]["annotations"]
    https = notes["serving.kserve.io/s3-usehttps"]
    host = endpoint.split("://", 1)[1]
    return {
        "AWS_ACCESS_KEY_ID": secret["stringData"]["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": secret["stringData"]["AWS_SECRET_ACCESS_KEY"],
        "S3_USE_HTTPS": https,
        "S3_ENDPOINT": host,
        "AWS_ENDPOINT_URL": ("https://" if https == "1" else "http://") + host,
        "S3_VERIFY_SSL": notes["serving.kserve.io/s3-verifyssl"],
        "AWS_DEFAULT_REGION": notes["serving.kserve.io/s3-region"],
    }


def env_flags(env: dict[str, str]) -> list[str]:
    return [flag for name, value in env.items() for flag in ("-e", f"{name}={value}")]


def upload(s3: S3Server, directory: Path, bucket: str, prefix: str) -> str:
    client = s3.client()
    if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=bucket)
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(directory)}")
    return f"s3://{bucket}/{prefix}"


def predictor_run_flags(container: dict[str, Any], port: int) -> tuple[list[str], list[str], dict[str, str]]:
    """docker run flags and args for the rendered predictor container, as the kubelet would start it.

    Returns (flags, args, env). Only the HTTP port is changed: the container shares the host network."""
    security = container["securityContext"]
    flags: list[str] = []
    if security.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    for capability in security.get("capabilities", {}).get("drop", []):
        flags += ["--cap-drop", capability]
    if security.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    for mount in container.get("volumeMounts", []):
        flags += ["--tmpfs", mount["mountPath"]]  # every volume of the rendered pod is an emptyDir
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}  # Secret refs: no store here
    args = [a if not a.startswith("--http_port=") else f"--http_port={port}" for a in container["args"]]
    return flags, args, env


class Predictor:
    """The predictor container started from the rendered spec, on a model volume the initializer filled."""

    def __init__(self, s3: S3Server, storage_uri: str, digest: str, tmp_path: Path) -> None:
        self.name = f"churnflow-predictor-{uuid.uuid4().hex[:8]}"
        self.volume = f"churnflow-models-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        spec = render_inferenceservice(
            name="churn", namespace="test", storage_uri=storage_uri, image=SERVE_IMAGE, metadata_sha256=digest
        )
        predictor = spec["spec"]["predictor"]
        (self.container,) = predictor["containers"]
        assert {v["name"] for v in predictor["volumes"]} == {m["name"] for m in self.container["volumeMounts"]}
        assert all("emptyDir" in v for v in predictor["volumes"])
        self.flags, self.args, self.env = predictor_run_flags(self.container, self.port)
        (tmp_path / "rendered.yaml").write_text(yaml.safe_dump(spec))
        self.s3 = s3

    def initialize(self) -> subprocess.CompletedProcess:
        """KServe's init container: storageUri into the shared volume at /mnt/models."""
        docker("volume", "create", self.volume)
        return docker(
            "run", "--rm", "--network", "host", "-v", f"{self.volume}:/mnt/models",
            *env_flags(storage_env(self.s3.endpoint)),
            INITIALIZER_IMAGE, self.env["STORAGE_URI"], "/mnt/models",
            check=False,
        )  # fmt: skip

    def start(self) -> None:
        docker(
            "run", "-d", "--name", self.name, "--network", "host", *self.flags,
            "-v", f"{self.volume}:/mnt/models:ro",  # KServe mounts the model read-only in the predictor
            *env_flags(self.env), self.container["image"], *self.args,
        )  # fmt: skip

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def running(self) -> bool:
        return docker("inspect", "-f", "{{.State.Running}}", self.name, check=False).stdout.strip() == "true"

    def wait_answering(self, path: str, timeout: float = 90) -> int:
        """The status of the first answer on `path` (the readiness probe's), or fails with the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return httpx.get(self.url + path, timeout=5).status_code
            except httpx.HTTPError:
                if not self.running():
                    break
                time.sleep(0.3)
        pytest.fail(f"predictor container never answered on {path}:\n{self.logs()[-3000:]}", pytrace=False)

    def stop(self) -> None:
        docker("rm", "-f", self.name, check=False)
        docker("volume", "rm", "-f", self.volume, check=False)


@pytest.fixture
def predictors(images: dict[str, Any], s3_server: S3Server, tmp_path: Path) -> Iterator[list[Predictor]]:
    started: list[Predictor] = []
    yield started
    for predictor in started:
        predictor.stop()


def test_serve_image_answers_as_the_rendered_predictor_container(
    predictors: list[Predictor], s3_server: S3Server, model_dir: Path, tmp_path: Path
) -> None:
    user = docker("image", "inspect", "-f", "{{.Config.User}}", SERVE_IMAGE).stdout.strip()
    # runAsNonRoot: the kubelet starts only an image whose user is a non-zero uid it can check
    assert user.isdigit() and int(user) != 0, user
    uri = upload(s3_server, model_dir, CONTAINER_BUCKET, f"churn/{uuid.uuid4().hex[:8]}")
    predictor = Predictor(s3_server, uri, sha256_file(model_dir / "metadata.json"), tmp_path)
    predictors.append(predictor)
    assert predictor.env["STORAGE_URI"] == uri and "--read-only" in predictor.flags
    init = predictor.initialize()
    assert init.returncode == 0, init.stdout + init.stderr
    predictor.start()
    probe = predictor.container["readinessProbe"]["httpGet"]["path"]
    deadline = time.monotonic() + 90
    while predictor.wait_answering(probe) != 200 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert httpx.get(predictor.url + probe).status_code == 200, predictor.logs()
    url = predictor.url

    v1 = httpx.post(f"{url}/v1/models/churn:predict", json={"instances": [ROW]})
    assert v1.status_code == 200, v1.text
    (answer,) = v1.json()["predictions"]
    assert set(answer) == {"churn", "probability"} and 0 <= answer["probability"] <= 1
    listed = httpx.post(f"{url}/v1/models/churn:predict", json={"instances": [list(ROW.values())]})
    assert listed.json()["predictions"] == [answer]
    bare = httpx.post(f"{url}/predict", json=ROW)  # the Flask baseline's curl body and route
    assert bare.status_code == 200 and bare.json() == answer
    inputs = [{"name": n, "shape": [1], "datatype": TYPES[n], "data": [ROW[n]]} for n in ROW]
    v2 = httpx.post(f"{url}/v2/models/churn/infer", json={"inputs": inputs})
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o["data"][0] for o in v2.json()["outputs"]}
    assert outputs["probability"] == pytest.approx(answer["probability"])
    explained = httpx.post(f"{url}/v1/models/churn:explain", json={"instances": [ROW]})
    assert explained.status_code == 200, explained.text
    (explanation,) = explained.json()["explanations"]
    assert set(explanation["contributions"]) == set(ROW)
    metrics = httpx.get(f"{url}/metrics")
    assert metrics.status_code == 200 and "churnflow_requests_total" in metrics.text
    # the model really came through the shared volume, and the root filesystem is read-only
    assert docker("exec", predictor.name, "ls", "/mnt/models").stdout.split().count("metadata.json") == 1
    denied = docker("exec", predictor.name, "touch", "/home/churnflow/x", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr


def test_serve_image_refuses_a_model_whose_metadata_does_not_match_the_digest(
    predictors: list[Predictor], s3_server: S3Server, model_dir: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    metadata = read_metadata(other)
    metadata.pop("files")
    write_metadata(other, {**metadata, "model_version": "swapped"})
    assert sha256_file(other / "metadata.json") != sha256_file(model_dir / "metadata.json")
    uri = upload(s3_server, other, CONTAINER_BUCKET, f"churn/{uuid.uuid4().hex[:8]}")
    predictor = Predictor(s3_server, uri, sha256_file(model_dir / "metadata.json"), tmp_path)
    predictors.append(predictor)
    assert predictor.initialize().returncode == 0
    predictor.start()
    probe = predictor.container["readinessProbe"]["httpGet"]["path"]
    status = predictor.wait_answering(probe) if predictor.running() else None
    for _ in range(20):  # never ready, whatever the timing of the load
        if predictor.running():
            status = httpx.get(predictor.url + probe).status_code
        assert status != 200
        time.sleep(0.25)
    assert "refusing the model" in predictor.logs(), predictor.logs()[-3000:]


def test_a_missing_object_fails_the_storage_initializer(
    predictors: list[Predictor], s3_server: S3Server, model_dir: Path, tmp_path: Path
) -> None:
    upload(s3_server, model_dir, CONTAINER_BUCKET, "present")
    predictor = Predictor(
        s3_server, f"s3://{CONTAINER_BUCKET}/absent", sha256_file(model_dir / "metadata.json"), tmp_path
    )
    predictors.append(predictor)
    init = predictor.initialize()
    assert init.returncode != 0 and "storage initialization failed" in init.stderr, init.stdout + init.stderr


# -- defect 2c: the train image under the KFP 2.2 launcher --------------------------------------------


def test_train_image_user_can_write_where_the_kfp_launcher_puts_artifacts(images: dict[str, Any]) -> None:
    """KFP 2.2.0's launcher writes under /minio, /s3 and /gcs in the image's own filesystem (no
    emptyDir there before 2.3.0): the image's user, with no override, must be able to."""
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", TRAIN_IMAGE).stdout)
    assert not config.get("Entrypoint"), config.get("Entrypoint")  # kfp.local and KFP give the whole command
    assert config["User"].isdigit() and int(config["User"]) != 0
    script = "for d in /minio /s3 /gcs; do mkdir -p $d/b/run/task && echo x > $d/b/run/task/out || exit 1; done; id -u"
    result = docker("run", "--rm", "--network", "host", TRAIN_IMAGE, "sh", "-c", script, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == config["User"]


def test_serve_image_has_no_kfp_and_kserve_s_kubernetes_pin(images: dict[str, Any]) -> None:
    """The predictor image carries KServe's ModelServer and churnflow's predictor, not the pipeline SDK;
    kserve 0.21 needs kubernetes < 37."""
    script = "import importlib.util as u, kubernetes; print(u.find_spec('kfp') is None, kubernetes.__version__)"
    result = docker("run", "--rm", "--network", "host", "--entrypoint", "python", SERVE_IMAGE, "-c", script)
    no_kfp, version = result.stdout.split()
    assert no_kfp == "True" and int(version.split(".")[0]) < 37, result.stdout


# -- the pipelines through kfp.local's DockerRunner, in the train image --------------------------------


def run_in_docker(code: str, tmp_path: Path, timeout: float = 900) -> dict[str, Any]:
    """Runs `code` (which prints one JSON line last) in a fresh interpreter whose components use the
    train image: CHURNFLOW_TRAIN_IMAGE is read when the components are declared."""
    env = {**os.environ, "CHURNFLOW_TRAIN_IMAGE": TRAIN_IMAGE}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tmp_path,
    )
    if done.returncode:
        logs = "\n".join(p.read_text()[-4000:] for p in tmp_path.rglob("*.log"))
        pytest.fail(f"pipeline in docker failed: {done.stderr[-3000:]}\n{logs}", pytrace=False)
    return json.loads(done.stdout.strip().splitlines()[-1])


def owners(root: Path) -> set[int]:
    return {p.stat().st_uid for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def trained(images: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The training pipeline run through kfp.local's DockerRunner on 1,000 synthetic rows."""
    out = tmp_path_factory.mktemp("docker-run")
    env = {k: v for k, v in os.environ.items() if k != "CHURNFLOW_TRAIN_IMAGE"}  # --image chooses it
    done = subprocess.run(
        [CHURNFLOW, "run", "--runner", "docker", "--image", TRAIN_IMAGE, "--rows", "1000",
         "--set", "tune=false", "--set", "n_estimators=30", "--output", str(out / "run")],
        capture_output=True, text=True, timeout=900, env=env, cwd=out,
    )  # fmt: skip
    log = out / "run" / "pipeline.log"
    assert done.returncode == 0, done.stdout + done.stderr + (log.read_text()[-4000:] if log.is_file() else "")
    result = json.loads((out / "run" / "metrics.json").read_text())
    assert result["deployed"] is True and result["rows"] == 1000, result
    assert result["roc_auc"] > 0.7 and result["compiled"] == "onnx", result
    return out / "run"


def test_training_pipeline_runs_in_the_train_image_as_its_user(trained: Path) -> None:
    log = (trained / "pipeline.log").read_text()
    assert f"Found image '{TRAIN_IMAGE}'" in log  # every task in the image, none on this machine
    uid = int(docker("image", "inspect", "-f", "{{.Config.User}}", TRAIN_IMAGE).stdout.strip())
    assert owners(trained / ".kfp") == {uid}  # every artifact written by the image's own user
    assert (trained / "model" / "model.onnx").is_file() and (trained / "inferenceservice.yaml").is_file()
    assert json.loads((trained / "metrics.json").read_text())["deployed"] is True


def test_docker_runner_without_an_engine_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path / 'no-docker.sock'}"}
    done = subprocess.run(
        [CHURNFLOW, "run", "--runner", "docker", "--output", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("churnflow: error: --runner docker: the Docker engine does not answer"), line


def test_scoring_pipeline_runs_in_the_train_image(trained: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    frame = synthetic_customers(1000, seed=9)
    for part in range(2):
        chunk = frame.iloc[part * 500 : (part + 1) * 500]
        pq.write_table(pa.Table.from_pandas(chunk, preserve_index=False), base / f"part-{part}.parquet")
    (tmp_path / "dataset.yaml").write_text(SCORING_CONFIG)  # the scoring test's: an id and a value column
    config = config_to_json(load_config(tmp_path / "dataset.yaml"))
    result = run_in_docker(
        f"""
        import json
        from pathlib import Path
        from churnflow.pipelines.local import docker_runner
        from churnflow.pipelines.scoring_pipeline import run_scoring_local
        out = Path({str(tmp_path / "scoring")!r})
        result = run_scoring_local(out, runner=docker_runner(out, Path({str(base)!r}), Path({str(trained)!r})),
                                   model_uri={str(trained / "model")!r}, data_uri={str(base)!r},
                                   dataset_config={config!r}, top=100, contact_cost=2.0, offer_cost=10.0,
                                   save_rate=0.3)
        print(json.dumps({{**result.metrics, "scores": str(result.scores), "calls": str(result.call_list)}}))
        """,
        tmp_path,
    )
    assert result["shards"] == 2 and result["rows"] == 1000 and result["rejects"] == 0, result
    scores = pq.read_table(result["scores"])
    assert scores.num_rows == 1000 and scores.column("rank").to_pylist() == list(range(1, 1001))
    calls = Path(result["calls"]).read_text().splitlines()
    assert len(calls) > 100 and '"reason_1"' in calls[0]  # the 100 contacted and their control group


def test_drift_pipeline_runs_in_the_train_image_and_retrains(trained: Path, tmp_path: Path, kfp_api: KfpApi) -> None:
    """The drift check reads the prediction store (the Secret's env on a cluster: here the runner's
    environment), finds drift, and its retrain task submits the training run to the KFP API (double)
    with the projected token, from inside the container."""
    from churnflow.predictor.model import ChurnModel
    from churnflow.store.logger import PredictionLogger

    from .test_drift import shifted

    shared = tmp_path / "shared"
    shared.mkdir()
    url = f"sqlite:///{shared / 'stream.db'}"
    model = ChurnModel("churn", str(trained / "model"))
    assert model.load()
    model.prediction_log = PredictionLogger(url, "churn")
    frame = shifted(synthetic_customers(500, seed=11), seed=12)
    model.predict(model.preprocess({"instances": frame.drop(columns=["churn"]).to_dict("records")}))
    model.prediction_log.close()
    kfp_api.multi_user, kfp_api.token, kfp_api.namespaces = True, "projected-sa-token", {"team-a"}
    (shared / "token").write_text("projected-sa-token")
    environment = {"CHURNFLOW_STORE_URL": url, "KF_PIPELINES_SA_TOKEN_PATH": str(shared / "token")}
    result = run_in_docker(
        f"""
        import json
        from pathlib import Path
        from churnflow.pipelines.drift_pipeline import drift_check_pipeline
        from churnflow.pipelines.local import docker_runner, run_in_kfp_local
        out = Path({str(tmp_path / "drift")!r})
        out.mkdir()
        runner = docker_runner(Path({str(shared)!r}), Path({str(trained)!r}), environment={environment!r})
        task = run_in_kfp_local(
            lambda: drift_check_pipeline(
                model_uri={str(trained / "model")!r}, evaluation_uri={str(trained / "model" / "evaluation.json")!r},
                pushgateway="", kfp_host={kfp_api.url!r}, namespace="team-a", data_uri="/data/customers.csv",
                train_image={TRAIN_IMAGE!r}),
            out / ".kfp", out / "drift.log", runner)
        print(json.dumps({{"drift": task.output}}))
        """,
        tmp_path,
    )
    assert result == {"drift": True}
    (run,) = kfp_api.posted("/apis/v2beta1/runs")
    assert run["runtime_config"]["parameters"]["data_uri"] == "/data/customers.csv"
    log = (tmp_path / "drift" / "drift.log").read_text()
    assert f"Found image '{TRAIN_IMAGE}'" in log
