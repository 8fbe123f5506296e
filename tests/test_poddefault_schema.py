"""Kubeflow's PodDefault checked against the PodDefault CRD of kubeflow/manifests (no PyPI package carries
a model of it): the CRD file comes through tests/schemas.py, from ../shared/kubeflow/, the cache or a
verified download, like KServe's.
"""

from __future__ import annotations

import copy

from . import schemas

schemas.need(schemas.KUBEFLOW_PODDEFAULT_CRD)

# What a pipeline pod needs to call the KFP API in multi-user Kubeflow: a projected service-account
# token for the pipelines audience, and the variable that tells the kfp client where it is.
ACCESS_ML_PIPELINE = {
    "apiVersion": "kubeflow.org/v1alpha1",
    "kind": "PodDefault",
    "metadata": {"name": "access-ml-pipeline", "namespace": "kubeflow-user-example-com"},
    "spec": {
        "desc": "Lets churnflow's pipeline pods call the Kubeflow Pipelines API",
        "selector": {"matchLabels": {"access-ml-pipeline": "true"}},
        "env": [{"name": "KF_PIPELINES_SA_TOKEN_PATH", "value": "/var/run/secrets/kubeflow/pipelines/token"}],
        "volumes": [
            {
                "name": "kfp-token",
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "audience": "pipelines.kubeflow.org",
                                "expirationSeconds": 3600,
                                "path": "token",
                            }
                        }
                    ]
                },
            }
        ],
        "volumeMounts": [{"name": "kfp-token", "mountPath": "/var/run/secrets/kubeflow/pipelines", "readOnly": True}],
    },
}


def test_a_poddefault_passes_the_kubeflow_crd():
    assert schemas.validate_poddefault(ACCESS_ML_PIPELINE) == []


def test_the_poddefault_check_names_each_wrong_field():
    broken = copy.deepcopy(ACCESS_ML_PIPELINE)
    del broken["spec"]["selector"]  # required: without it the webhook matches nothing
    broken["spec"]["volumeMount"] = broken["spec"].pop("volumeMounts")  # misspelt
    broken["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] = "1h"
    assert schemas.validate_poddefault(broken) == [
        "spec: 'selector' is a required property",
        "spec: Additional properties are not allowed ('volumeMount' was unexpected)",
        "spec/volumes/0/projected/sources/0/serviceAccountToken/expirationSeconds: '1h' is not of type 'integer'",
    ]
