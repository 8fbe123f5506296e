"""Issue 3/6: a missing, corrupt or mismatched artifact leaves the server up but not ready, saying why
in one log line; it never serves a half-loaded model."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from churnflow.predictor.model import ChurnModel

ROW = {"tenure": 12, "usage": 50, "age": 30, "monthly_charges": 70, "contract_type": "Month-to-month"}


def truncate(path):
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


BREAKAGES = {
    "missing model file": (lambda d: (d / "model.joblib").unlink(), "model.joblib is missing"),
    "truncated model file": (lambda d: truncate(d / "model.joblib"), "model.joblib SHA-256"),
    "tampered model file": (lambda d: flip_byte(d / "model.joblib"), "refusing to load it"),
    "tampered compiled forest": (lambda d: flip_byte(d / "model.onnx"), "model.onnx SHA-256"),
    "missing contract": (lambda d: (d / "contract.json").unlink(), "contract.json is missing"),
    "missing metadata": (lambda d: (d / "metadata.json").unlink(), "no metadata.json"),
    "metadata not JSON": (lambda d: (d / "metadata.json").write_text("{"), "metadata.json: not valid JSON"),
    "no directory": (lambda d: shutil.rmtree(d), "does not exist"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_artifacts_leave_the_server_up_and_not_ready(breakage, start_server, model_dir, tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    damage, message = BREAKAGES[breakage]
    damage(broken)
    server = start_server(broken, ready=False)
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{server.url}/v2/models/churn/ready").status_code != 200
    answer = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [ROW]})
    assert answer.status_code == 503
    errors = [line for line in server.log().splitlines() if "not loaded from" in line]
    assert errors and message in errors[0] and "is not ready" in errors[0], server.log()[-2000:]
    assert "Traceback" not in server.log()


def test_in_process_reload_recovers_once_the_directory_is_repaired(model_dir, tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    metadata = json.loads((broken / "metadata.json").read_text())
    (broken / "contract.json").write_text("{}")
    model = ChurnModel("churn", str(broken))
    assert model.load() is False and not model.ready and "contract.json SHA-256" in model.load_error
    shutil.copy(model_dir / "contract.json", broken / "contract.json")
    assert model.reload() is True and model.ready
    assert model.loaded.released.metadata["model_version"] == metadata["model_version"]


def test_a_hot_reload_frees_the_replaced_model_even_when_frozen(model_dir, tmp_path):
    """The server freezes its start-up objects against long GC pauses, the first model among them.
    Frozen objects are never collected, so a reload must free the old model by reference counting
    alone: nothing of a loaded model may sit in a reference cycle."""
    import gc
    import weakref

    from churnflow.predictor.gc_freeze import freeze_startup_objects

    model = ChurnModel("churn", str(model_dir))
    assert model.load()
    old = [weakref.ref(model.loaded), weakref.ref(model.loaded.released.scorer), weakref.ref(model.metrics)]
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
        assert model.reload() is True
        assert [ref() for ref in old] == [None, None, None]
    finally:
        gc.unfreeze()
