"""Issue 13 item 5: the drift check's results reach Prometheus through a real Pushgateway (Debian's
prometheus-pushgateway), grouped so that a newer model version's check replaces the older one's."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from churnflow.cli import main
from churnflow.core.errors import ChurnflowError
from churnflow.core.synthetic import synthetic_customers
from churnflow.monitoring.drift_report import push_report
from churnflow.predictor.model import ChurnModel
from churnflow.store.database import PredictionStore
from churnflow.store.logger import PredictionLogger
from churnflow.store.outcomes import record_outcomes

from .conftest import free_port
from .daemons import start_pushgateway
from .test_drift import released  # noqa: F401 - the released model fixture, shared by name


@pytest.fixture
def pushgateway(tmp_path):
    daemon = start_pushgateway(tmp_path)
    yield daemon.url
    daemon.stop()


def pushed(url: str, name: str) -> list:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def report(version: str, drop: float) -> dict:
    return {
        "model_name": "churn",
        "model_version": version,
        "drift": drop > 0.1,
        "window": {"rows": 500},
        "data_drift": {"features": {}},
        "prediction_drift": {},
        "accuracy": {"labelled": 400, "live": {"precision": 0.5}, "precision_drop": drop},
    }


def test_the_cli_pushes_the_drift_results(released: Path, tmp_path: Path, pushgateway: str, capsys) -> None:  # noqa: F811
    url = f"sqlite:///{tmp_path / 'store.db'}"
    model = ChurnModel("churn", str(released))
    assert model.load()
    model.prediction_log = PredictionLogger(url, "churn")
    customers = synthetic_customers(300, seed=21)
    model.predict(model.preprocess({"instances": customers.drop(columns=["churn"]).to_dict("records")}))
    assert model.prediction_log.flush(30)
    model.prediction_log.close()
    store = PredictionStore(url)
    outcomes = [{"customer_id": c, "churned": 0} for c in customers["customer_id"]]  # nobody churned: precision 0
    record_outcomes(store, outcomes)
    store.close()
    code = main(
        ["drift", "--store", url, "--model-dir", str(released), "--pushgateway", pushgateway, "--namespace", "ml"]
    )
    assert code == 3 and f"pushed to {pushgateway} (model_name=churn, namespace=ml)" in capsys.readouterr().out
    (drop,) = pushed(pushgateway, "churnflow_precision_drop_ratio")
    assert drop.value == pytest.approx(1.0)  # precision fell to 0: a 100% drop
    assert drop.labels["job"] == "churnflow-drift" and drop.labels["namespace"] == "ml"
    assert drop.labels["model_name"] == "churn" and drop.labels["model_version"]


def test_a_newer_versions_check_replaces_the_older_ones(pushgateway: str) -> None:
    push_report(report("v1", 0.3), pushgateway)
    push_report(report("v2", 0.02), pushgateway)
    samples = pushed(pushgateway, "churnflow_precision_drop_ratio")
    # the retired v1's 30% drop would otherwise keep the alert firing after the retrain
    assert [(s.labels["model_version"], s.value) for s in samples] == [("v2", 0.02)]


def test_an_unreachable_pushgateway_is_one_line() -> None:
    gateway = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ChurnflowError, match=rf"^pushgateway {gateway}: the drift results were not pushed \("):
        push_report(report("v1", 0.3), gateway, timeout=2)


def test_the_pushgateway_is_a_system_dependency() -> None:
    script = (Path(__file__).resolve().parents[1] / "scripts" / "system-deps.sh").read_text()
    assert "prometheus-pushgateway" in script and shutil.which("prometheus-pushgateway")
