"""The KFP API double refuses what KFP's API server refuses for our calls (a double that accepts
anything proves nothing). Driven by the real kfp.Client, as churnflow drives it."""

import warnings
from pathlib import Path

import kfp_server_api
import pytest
from kfp import Client

from churnflow.pipelines.kubeflow import compile_pipeline

from .kfp_api import KfpApi


@pytest.fixture
def client(kfp_api: KfpApi) -> Client:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return Client(host=kfp_api.url)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(compile_pipeline(tmp_path_factory.mktemp("kfp") / "pipeline.yaml"))


def refused(call, status: int, words: str) -> None:
    with pytest.raises(kfp_server_api.ApiException) as error:
        call()
    assert error.value.status == status and words in error.value.body


def test_healthz_reports_the_configured_backend(kfp_api: KfpApi, client: Client) -> None:
    kfp_api.version, kfp_api.multi_user = "2.5.0", True
    body = client._healthz_api.healthz_service_get_healthz(_preload_content=False).data
    assert b'"tag_name": "2.5.0"' in body and b'"multi_user": true' in body


def test_runs_are_checked_against_the_pipeline_spec(client: Client, package: str) -> None:
    experiment = client.create_experiment("churnflow").experiment_id
    run = client.run_pipeline(experiment, "ok", package, params={"min_roc_auc": 0.8})
    assert run.run_id
    refused(lambda: client.run_pipeline(experiment, "bad", package, params={"learning_rate": 0.1}), 400, "not an input")
    refused(lambda: client.run_pipeline(experiment, "bad", package, params={"tune": "yes"}), 400, "wrong type")
    refused(lambda: client.run_pipeline(experiment, "", package), 400, "display_name is empty")
    refused(lambda: client.run_pipeline("exp-404", "x", package), 404, "not found")


def test_required_parameters_must_be_given(client: Client, tmp_path: Path) -> None:
    from churnflow.pipelines.drift_pipeline import compile_drift_pipeline

    drift = compile_drift_pipeline(str(tmp_path / "drift.yaml"))
    experiment = client.create_experiment("drift").experiment_id
    refused(lambda: client.run_pipeline(experiment, "drift", drift), 400, "_uri' is missing")


def test_recurring_runs_need_a_six_field_cron_and_a_sane_concurrency(client: Client, package: str) -> None:
    experiment = client.create_experiment("churnflow").experiment_id

    def schedule(cron: str, concurrency: int = 1):
        return client.create_recurring_run(
            experiment, "nightly", cron_expression=cron, max_concurrency=concurrency, pipeline_package_path=package
        )

    assert schedule("0 0 3 * * *").recurring_run_id
    refused(lambda: schedule("0 3 * * *"), 400, "six-field cron")
    refused(lambda: schedule("0 0 3 * * *", 11), 400, "between 1 and 10")


def test_multi_user_mode_wants_a_namespace_the_token_may_use(kfp_api: KfpApi, client: Client) -> None:
    kfp_api.multi_user, kfp_api.namespaces = True, {"team-a"}
    refused(lambda: client.create_experiment("x"), 400, "needs a namespace")
    refused(lambda: client.create_experiment("x", namespace="team-b"), 403, "namespace 'team-b'")
    assert client.create_experiment("x", namespace="team-a").namespace == "team-a"


def test_an_api_before_2_4_cannot_parse_resource_strings(kfp_api: KfpApi, client: Client, tmp_path: Path) -> None:
    from .test_kfp_backends import _with_resources

    kfp_api.version = "2.3.0"
    experiment = client.create_experiment("x").experiment_id
    newest = str(compile_pipeline(tmp_path / "a.yaml", pipeline=_with_resources))
    refused(lambda: client.run_pipeline(experiment, "r", newest), 400, 'unknown field \\"resourceCpu')
    old = str(compile_pipeline(tmp_path / "b.yaml", pipeline=_with_resources, backend=(2, 3)))
    assert client.run_pipeline(experiment, "r", old).run_id
