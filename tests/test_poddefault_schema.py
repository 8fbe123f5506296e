"""Kubeflow's PodDefault checked against the schema tests/schemas.py builds from Kubeflow's Go type
(`PodDefaultSpec`) and the strict Kubernetes definitions in the kubernetes-validate wheel: nothing to
download, nothing to put beside the checkout.
"""

from __future__ import annotations

import copy

from . import schemas

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


def test_a_poddefault_passes_the_schema_built_from_kubeflows_type():
    assert schemas.validate_poddefault(ACCESS_ML_PIPELINE) == []


def test_the_poddefault_check_names_each_wrong_field():
    broken = copy.deepcopy(ACCESS_ML_PIPELINE)
    del broken["spec"]["selector"]  # required: without it the webhook matches nothing
    broken["spec"]["volumeMount"] = broken["spec"].pop("volumeMounts")  # misspelt
    broken["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] = "1h"
    assert schemas.validate_poddefault(broken) == [
        "spec: 'selector' is a required property",
        "spec: Additional properties are not allowed ('volumeMount' was unexpected)",
        "spec/volumes/0/projected/sources/0/serviceAccountToken/expirationSeconds: "
        "'1h' is not of type 'integer', 'null'",
    ]


def test_the_nested_kubernetes_types_are_checked_by_their_own_definitions():
    """Each Go field of a Kubernetes type gets that type's whole definition, closed to unknown fields:
    a wrong type three levels down in an EnvVar, a field a Volume does not have (it belongs on the
    mount), a Container's resources and ObjectMeta in `metadata` are all caught."""
    broken = copy.deepcopy(ACCESS_ML_PIPELINE)
    broken["metadata"]["label"] = {"app": "churn"}  # `labels`
    secret = {"secretKeyRef": {"name": 5, "key": "password"}}
    broken["spec"]["env"].append({"name": "STORE_PASSWORD", "valueFrom": secret})
    broken["spec"]["volumes"][0]["readOnly"] = True
    broken["spec"]["sidecars"] = [{"name": "proxy", "image": "proxy:1", "resources": {"limits": {"cpu": [1]}}}]
    assert schemas.validate_poddefault(broken) == [
        "metadata: Additional properties are not allowed ('label' was unexpected)",
        "spec/env/1/valueFrom/secretKeyRef/name: 5 is not of type 'string', 'null'",
        "spec/sidecars/0/resources/limits/cpu: [1] is not of type 'string', 'null'",
        "spec/volumes/0: Additional properties are not allowed ('readOnly' was unexpected)",
    ]
