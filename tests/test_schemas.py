"""Issue 26: the schemas come from ../shared, the cache or a verified download, and a run without any of
them stops at once with one line.

The downloads go to a local pytest-httpserver serving the real file (through `base`, which is what
$CHURNFLOW_SCHEMA_URL_BASE sets), so the digest checked is the recorded one of the real file. The last
tests run pytest itself in a copy of the repository with no ../shared beside it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from . import schemas
from .conftest import free_port

SOURCE = schemas.need(schemas.KSERVE_INFERENCESERVICE_CRD)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real_bytes() -> bytes:
    """The real CRD's bytes, from wherever this run found it (conftest located it before the tests)."""
    return schemas.locate(SOURCE).read_bytes()


def closed_port_url() -> str:
    """A loopback URL where nothing listens: what a machine without network access sees."""
    return f"http://127.0.0.1:{free_port()}"


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def test_the_recorded_digest_is_the_one_of_the_file_ci_keeps_in_shared(real_bytes):
    """The pin and ../shared/kserve/ agree, so a downloaded copy validates exactly as CI's copy does."""
    assert hashlib.sha256(real_bytes).hexdigest() == SOURCE.sha256


def test_a_download_with_the_right_digest_is_cached_and_used(httpserver: HTTPServer, tmp_path, real_bytes):
    httpserver.expect_request(SOURCE.path).respond_with_data(real_bytes, content_type="text/plain")
    cache = tmp_path / "cache"
    found = schemas.locate(SOURCE, shared=tmp_path / "no-shared", cache=cache, base=httpserver.url_for(""))
    assert found.is_relative_to(cache) and found.read_bytes() == real_bytes
    assert files_under(cache) == [found]  # no partial file left behind
    assert len(httpserver.log) == 1
    httpserver.clear()  # the server now answers nothing: a second run must not need it
    again = schemas.locate(SOURCE, shared=tmp_path / "no-shared", cache=cache, base=closed_port_url())
    assert again == found and len(httpserver.log) == 0
    # and it is what the schema checks use
    schema = schemas.strict_crd_schema(schemas.load_crd(again)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    assert schema["properties"]["spec"]["properties"]["predictor"]["additionalProperties"] is False


def test_a_download_with_a_wrong_digest_is_refused_and_nothing_is_cached(httpserver: HTTPServer, tmp_path, real_bytes):
    httpserver.expect_request(SOURCE.path).respond_with_data(real_bytes + b"# one line more\n")
    cache = tmp_path / "cache"
    with pytest.raises(schemas.SchemaUnavailable) as caught:
        schemas.locate(SOURCE, shared=tmp_path / "no-shared", cache=cache, base=httpserver.url_for(""))
    message = str(caught.value)
    assert "\n" not in message
    assert "refused, nothing cached" in message and SOURCE.sha256 in message
    assert f"put inferenceservices-crd.yaml at {tmp_path / 'no-shared' / 'kserve'}/" in message
    assert files_under(cache) == []


def test_without_a_copy_or_a_server_one_line_says_which_file_where_and_from_where(tmp_path):
    base = closed_port_url()
    with pytest.raises(schemas.SchemaUnavailable) as caught:
        schemas.locate(SOURCE, shared=tmp_path / "no-shared", cache=tmp_path / "cache", base=base)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("KServe's InferenceService CRD is missing and could not be downloaded")
    assert f"put inferenceservices-crd.yaml at {tmp_path / 'no-shared' / 'kserve'}/" in message
    assert f"(it is {base}{SOURCE.path}, SHA-256 {SOURCE.sha256})" in message
    assert files_under(tmp_path / "cache") == []


def test_a_damaged_cached_copy_is_replaced(httpserver: HTTPServer, tmp_path, real_bytes):
    cache = tmp_path / "cache"
    damaged = cache / SOURCE.sha256[:16] / SOURCE.file_name
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(real_bytes[: len(real_bytes) // 2])  # an interrupted copy by other means
    httpserver.expect_request(SOURCE.path).respond_with_data(real_bytes)
    found = schemas.locate(SOURCE, shared=tmp_path / "no-shared", cache=cache, base=httpserver.url_for(""))
    assert found == damaged and found.read_bytes() == real_bytes


def test_the_shared_copy_is_looked_at_first(tmp_path, real_bytes):
    shared = tmp_path / "shared"
    (shared / "kserve").mkdir(parents=True)
    (shared / "kserve" / SOURCE.file_name).write_bytes(real_bytes)
    found = schemas.locate(SOURCE, shared=shared, cache=tmp_path / "cache", base=closed_port_url())
    assert found == shared / "kserve" / SOURCE.file_name
    assert files_under(tmp_path / "cache") == []


def test_the_cache_lives_in_the_users_cache_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert schemas.cache_dir() == tmp_path / "xdg" / "churnflow" / "schemas"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert schemas.cache_dir() == tmp_path / "home" / ".cache" / "churnflow" / "schemas"


def test_the_url_base_can_be_overridden_for_a_local_server(monkeypatch):
    monkeypatch.delenv(schemas.URL_BASE_VARIABLE, raising=False)
    assert SOURCE.url() == "https://raw.githubusercontent.com" + SOURCE.path
    monkeypatch.setenv(schemas.URL_BASE_VARIABLE, "http://127.0.0.1:9/")
    assert SOURCE.url() == "http://127.0.0.1:9" + SOURCE.path


# -- the whole set-up, in a copy of the repository with no ../shared beside it ---------------------------


@pytest.fixture
def lone_clone(tmp_path) -> Path:
    """The project's files (tracked and new, as git sees them) copied where no ../shared is beside them."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "tests", "manifests", "pyproject.toml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    clone = tmp_path / "alone" / "churnflow"
    for name in listed:
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    assert not (clone.parent / "shared").exists()
    return clone


def run_pytest_in(clone: Path, xdg_cache: Path, url_base: str, *selection: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CHURNFLOW_"))}
    env.update(XDG_CACHE_HOME=str(xdg_cache), **{schemas.URL_BASE_VARIABLE: url_base})
    selection = selection or ("tests/test_manifests.py", "-k", "crd_check")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_lone_clone_with_a_warm_cache_runs_without_network(lone_clone, tmp_path, real_bytes):
    xdg = tmp_path / "xdg"
    cached = xdg / "churnflow" / "schemas" / SOURCE.sha256[:16] / SOURCE.file_name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(real_bytes)  # what an earlier run's download left
    result = run_pytest_in(lone_clone, xdg, closed_port_url())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_a_lone_clone_without_cache_or_network_stops_at_once_with_one_line(lone_clone, tmp_path):
    result = run_pytest_in(lone_clone, tmp_path / "xdg", closed_port_url())
    assert result.returncode == 4, result.stdout + result.stderr
    said = [line for line in result.stdout.splitlines() if "inferenceservices-crd.yaml" in line]
    assert len(said) == 1, result.stdout
    assert f"put inferenceservices-crd.yaml at {lone_clone.parent / 'shared' / 'kserve'}/" in said[0]
    assert "passed" not in result.stdout and "error" not in result.stdout.lower().replace(said[0].lower(), "")


def test_a_lone_clone_checks_poddefaults_without_cache_or_network(lone_clone, tmp_path):
    """PodDefault's schema is built from the installed packages: nothing to find, fetch or cache."""
    result = run_pytest_in(lone_clone, tmp_path / "xdg", closed_port_url(), "tests/test_poddefault_schema.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    assert files_under(tmp_path / "xdg") == []


# -- custom resources validated against models that PyPI packages carry (no download) ----------------------

PIPELINE_CALLS_PREDICTOR = {
    "apiVersion": "security.istio.io/v1",
    "kind": "AuthorizationPolicy",
    "metadata": {"name": "churn-predictor-from-pipelines", "namespace": "kubeflow-user-example-com"},
    "spec": {
        "action": "ALLOW",
        "selector": {"matchLabels": {"serving.kserve.io/inferenceservice": "churn"}},
        "rules": [
            {
                "from": [
                    {"source": {"principals": ["cluster.local/ns/kubeflow-user-example-com/sa/churnflow-pipeline"]}}
                ],
                "to": [{"operation": {"methods": ["GET", "POST"], "paths": ["/v1/models/*", "/v2/models/*"]}}],
            }
        ],
    },
}


def test_an_authorization_policy_passes_the_istio_models():
    assert schemas.validate_istio(PIPELINE_CALLS_PREDICTOR) == []


def test_the_istio_check_names_each_wrong_field_and_nothing_else():
    policy = {**PIPELINE_CALLS_PREDICTOR, "spec": {**PIPELINE_CALLS_PREDICTOR["spec"], "action": "PERMIT"}}
    # `paths` misspelt, and `methods` a string: two errors inside one optional object
    policy["spec"]["rules"] = [{"to": [{"operation": {"path": ["/v2/models/*"], "methods": "POST"}}]}]
    assert schemas.validate_istio(policy) == [
        "spec/action: 'PERMIT' is not one of ['ALLOW', 'DENY', 'AUDIT', 'CUSTOM']",
        "spec/rules/0/to/0/operation: Additional properties are not allowed ('path' was unexpected)",
        "spec/rules/0/to/0/operation/methods: 'POST' is not of type 'array'",
    ]


def test_the_helpers_refuse_a_resource_of_another_group():
    assert schemas.validate_istio({"apiVersion": "kubeflow.org/v1alpha1", "kind": "PodDefault"}) == [
        "apiVersion: expected a security.istio.io resource, got 'kubeflow.org/v1alpha1'"
    ]
    with pytest.raises(ValueError, match="no schema for apiVersion 'security.istio.io/v1' kind 'Gateway'"):
        schemas.validate_custom({"apiVersion": "security.istio.io/v1", "kind": "Gateway"})


def test_the_prometheus_operator_check_refuses_unknown_fields():
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "churn-predictor"},
        "spec": {
            "selector": {"matchLabels": {"app": "churn"}},
            "podMetricsEndpoint": [{"port": "user-port", "path": "/metrics"}],  # `podMetricsEndpoints`
        },
    }
    assert schemas.validate_custom(monitor) == [
        "spec: Additional properties are not allowed ('podMetricsEndpoint' was unexpected)"
    ]
    monitor["spec"]["podMetricsEndpoints"] = monitor["spec"].pop("podMetricsEndpoint")
    assert schemas.validate_custom(monitor) == []
