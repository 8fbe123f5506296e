"""The shared fixtures work: a model is built and a real server answers the original request."""

import httpx

ORIGINAL = {"tenure": 12, "usage": 50, "age": 30, "monthly_charges": 70, "contract_type": "Month-to-month"}


def test_server_answers_original_request(server):
    response = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [ORIGINAL]})
    assert response.status_code == 200
    (prediction,) = response.json()["predictions"]
    assert set(prediction) == {"churn", "probability"}
    assert prediction["churn"] in (0, 1) and 0.0 <= prediction["probability"] <= 1.0
