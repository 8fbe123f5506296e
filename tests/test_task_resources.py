"""Issue 12, item 7: every task of both compiled pipelines requests and limits CPU and memory.

A Kubeflow profile namespace with a ResourceQuota rejects a pod without them. The values must be
constants in both of KFP's encodings: the `resource*` strings (backend 2.4+) and the older numeric
fields, the only ones the 2.2/2.3 backends of Kubeflow 1.9 read.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes.utils.quantity import parse_quantity

from churnflow.cli import main
from churnflow.pipelines.drift_pipeline import compile_drift_pipeline
from churnflow.pipelines.kubeflow import compile_pipeline
from churnflow.pipelines.resources import compute_profile

NEW_FIELDS = ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit")
OLD_FIELDS = ("cpuRequest", "cpuLimit", "memoryRequest", "memoryLimit")
COMPUTE_STEPS = {
    "exec-preprocess-op",
    *(f"exec-cv-score-op{suffix}" for suffix in ("", "-2", "-3")),  # one per rung of the search
    "exec-tune-op",  # the whole search in one task: small tables (and backends before 2.14)
    "exec-train-op",
    "exec-evaluate-op",
    "exec-drift-check-op",
}


def executors(path: Path) -> dict[str, dict]:
    spec = next(d for d in yaml.safe_load_all(path.read_text()) if d)
    return spec["deploymentSpec"]["executors"]


def containers(path: Path) -> dict[str, dict]:
    found = {name: e["container"] for name, e in executors(path).items() if "container" in e}
    others = set(executors(path)) - set(found)
    assert all("importer" in executors(path)[name] for name in others), others  # nothing else runs a pod
    return found


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compiled")
    training = compile_pipeline(root / "training.yaml", image="r.example/train:1")
    drift = Path(compile_drift_pipeline(str(root / "drift.yaml"), image="r.example/train:1"))
    return {"training": training, "drift": drift}


@pytest.mark.parametrize("pipeline", ["training", "drift"])
def test_every_task_requests_and_limits_cpu_and_memory(compiled, pipeline):
    tasks = containers(compiled[pipeline])
    assert len(tasks) >= (7 if pipeline == "training" else 2)
    for name, container in tasks.items():
        resources = container.get("resources", {})
        missing = [f for f in NEW_FIELDS + OLD_FIELDS if not resources.get(f)]
        assert not missing, f"{name} lacks {missing}"
        for field in NEW_FIELDS:
            assert "{{$" not in str(resources[field]), f"{name}.{field} is a runtime parameter"
        for kind in ("Cpu", "Memory"):
            request = parse_quantity(resources[f"resource{kind}Request"])
            limit = parse_quantity(resources[f"resource{kind}Limit"])
            assert 0 < request <= limit, (name, kind, request, limit)
        # The numeric fields say the same (memory in decimal gigabytes, as the old driver reads them).
        assert float(parse_quantity(resources["resourceCpuLimit"])) == pytest.approx(resources["cpuLimit"])
        memory_limit = float(parse_quantity(resources["resourceMemoryLimit"]))
        assert memory_limit == pytest.approx(resources["memoryLimit"] * 1e9)


def test_compile_options_set_the_compute_steps(tmp_path):
    path = tmp_path / "p.yaml"
    arguments = ["--cpu-request", "1", "--cpu-limit", "3", "--memory-request", "2Gi", "--memory-limit", "6Gi"]
    assert main(["compile", "--output", str(path), *arguments]) == 0
    for name, container in containers(path).items():
        resources = container["resources"]
        if name in COMPUTE_STEPS:
            assert (resources["resourceCpuLimit"], resources["resourceMemoryRequest"]) == ("3", "2Gi")
            assert resources["cpuLimit"] == 3.0
        else:
            assert (resources["resourceCpuLimit"], resources["resourceMemoryLimit"]) == ("500m", "1Gi")
    drift = tmp_path / "drift.yaml"
    assert main(["compile", "--pipeline", "drift", "--output", str(drift), "--memory-limit", "5Gi"]) == 0
    assert containers(drift)["exec-drift-check-op"]["resources"]["resourceMemoryLimit"] == "5Gi"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--cpu-request", "3"], "churnflow: error: --cpu-request: the compute steps' request 3 is above"),
        (["--memory-limit", "lots"], "churnflow: error: --memory-limit: expected a positive Kubernetes quantity"),
        (["--cpu-limit", "0"], "churnflow: error: --cpu-limit: expected a positive Kubernetes quantity"),
    ],
)
def test_bad_resources_are_one_line(tmp_path, capsys, arguments, message):
    assert main(["compile", "--output", str(tmp_path / "p.yaml"), *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "p.yaml").exists()


def test_default_resources_compile_to_the_same_pipeline(compiled, tmp_path):
    explicit = compile_pipeline(tmp_path / "b.yaml", image="r.example/train:1", resources=compute_profile())
    assert compiled["training"].read_text() == explicit.read_text()


def test_submit_sends_the_chosen_resources(kfp_api, capsys):
    assert main(["submit", "--host", kfp_api.url, "--cpu-limit", "3", "--memory-limit", "6Gi"]) == 0
    capsys.readouterr()
    (run,) = kfp_api.posted("/apis/v2beta1/runs")
    spec = run["pipeline_spec"].get("pipeline_spec", run["pipeline_spec"])  # beside its platform spec (Secrets)
    train = spec["deploymentSpec"]["executors"]["exec-train-op"]["container"]["resources"]
    assert (train["resourceCpuLimit"], train["resourceMemoryLimit"], train["cpuLimit"]) == ("3", "6Gi", 3.0)
