"""The drift-check pipeline: check the logged predictions and, on drift, start the training pipeline.

    import(model) ─┐
    import(eval) ──┴─► drift-check ─► If(drift) ─► retrain (kfp.Client → churnflow-training)

Meant to run on a schedule (a KFP recurring run, e.g. daily). The model and its evaluation report
are imported by URI: the train step's `model` artifact (the InferenceService's storageUri) and the
evaluate step's `report` artifact of the run that deployed it. The store URL holds a password, so it is
never a parameter: it comes from the Secret named by `store_secret` (key `url`, the same Secret the
InferenceService logs with), as CHURNFLOW_STORE_URL. The results are pushed to the Pushgateway at
`pushgateway` (empty: not pushed), where Prometheus' precision-drop alert reads them.
"""

from kfp import dsl, kubernetes
from kfp.dsl import Artifact, Input, Model

from churnflow.components.deploy.inferenceservice import STORE_ENV, STORE_SECRET, STORE_SECRET_KEY
from churnflow.components.deploy.logic import APPLY
from churnflow.components.drift_check.component import drift_check_op
from churnflow.components.image import TRAIN_IMAGE, churnflow_component
from churnflow.core.artifact import DEFAULT_MODEL_NAME
from churnflow.monitoring.thresholds import DEFAULT_THRESHOLDS, DEFAULT_WINDOW
from churnflow.pipelines.kubeflow import DEFAULT_EXPERIMENT, DEFAULT_SERVICE_ACCOUNT
from churnflow.pipelines.resources import set_resources

PIPELINE_NAME = "churnflow-drift-check"
KFP_ACCESS_LABEL = "access-ml-pipeline"
DEFAULT_PUSHGATEWAY = "http://prometheus-pushgateway.monitoring.svc:9091"


@churnflow_component
def retrain_op(
    drift_report: Input[Artifact],
    kfp_host: str,
    namespace: str,
    experiment: str,
    data_uri: str,
    training_arguments: str,
    train_image: str,
    deploy_action: str,
    dataset_config: str,
    service_account: str,
) -> str:
    """Starts the training pipeline through kfp.Client with the latest data; returns the run id.

    In-cluster API and projected token, the profile's namespace, the drift pipeline's own image."""
    import json

    from churnflow.pipelines.retraining import run_name, start_retraining

    with open(drift_report.path) as handle:
        report = json.load(handle)
    run_id, arguments = start_retraining(
        kfp_host,
        data_uri,
        training_arguments,
        namespace=namespace,
        experiment=experiment,
        name=run_name(report),
        image=train_image,
        deploy_action=deploy_action,
        dataset_config=dataset_config,
        service_account=service_account,
    )
    print(f"retrain: drift ({'; '.join(report['reasons'])}) → training run {run_id} with {sorted(arguments)}")
    return run_id


@dsl.pipeline(name=PIPELINE_NAME, description="Check served predictions for drift; retrain the churn model on drift.")
def drift_check_pipeline(
    model_uri: str,
    evaluation_uri: str,
    store_secret: str = STORE_SECRET,
    pushgateway: str = DEFAULT_PUSHGATEWAY,
    model_name: str = DEFAULT_MODEL_NAME,
    window: int = DEFAULT_WINDOW,
    psi_watch: float = DEFAULT_THRESHOLDS.psi_watch,
    psi_act: float = DEFAULT_THRESHOLDS.psi_act,
    alpha: float = DEFAULT_THRESHOLDS.alpha,
    precision_drop: float = DEFAULT_THRESHOLDS.precision_drop,
    min_rows: int = DEFAULT_THRESHOLDS.min_rows,
    min_labelled: int = DEFAULT_THRESHOLDS.min_labelled,
    retrain: bool = True,
    kfp_host: str = "",
    namespace: str = "",
    experiment: str = DEFAULT_EXPERIMENT,
    data_uri: str = "",
    training_arguments: str = "{}",
    train_image: str = TRAIN_IMAGE,
    deploy_action: str = APPLY,
    dataset_config: str = "",
    service_account: str = DEFAULT_SERVICE_ACCOUNT,
) -> bool:
    model = dsl.importer(artifact_uri=model_uri, artifact_class=Model, reimport=False)
    evaluation = dsl.importer(artifact_uri=evaluation_uri, artifact_class=Artifact, reimport=False)
    check = drift_check_op(
        store_url="",  # read from the Secret below, never a parameter
        model=model.output,
        evaluation=evaluation.output,
        model_name=model_name,
        window=window,
        psi_watch=psi_watch,
        psi_act=psi_act,
        alpha=alpha,
        precision_drop=precision_drop,
        min_rows=min_rows,
        min_labelled=min_labelled,
        pushgateway=pushgateway,
        namespace=namespace,
    )
    set_resources(check, "compute")
    check.set_caching_options(False)  # the store changes under the same inputs: every scheduled run checks anew
    # Not optional=True: backends before KFP 2.14 reject that field; a missing Secret fails the task loudly.
    kubernetes.use_secret_as_env(check, secret_name=store_secret, secret_key_to_env={STORE_SECRET_KEY: STORE_ENV})
    drifted = dsl.If(check.outputs["Output"] == True, name="drift-detected")  # noqa: E712
    with drifted, dsl.If(retrain == True, name="retraining-enabled"):  # noqa: E712
        start = retrain_op(
            drift_report=check.outputs["report_json"],
            kfp_host=kfp_host,
            namespace=namespace,
            experiment=experiment,
            data_uri=data_uri,
            training_arguments=training_arguments,
            train_image=train_image,
            deploy_action=deploy_action,
            dataset_config=dataset_config,
            service_account=service_account,
        )
        start.set_caching_options(False)
        # Kubeflow's PodDefault `access-ml-pipeline` projects the KFP API token into pods with this label
        # (KF_PIPELINES_SA_TOKEN_PATH); multi-user Kubeflow refuses the retrain's calls without it.
        kubernetes.add_pod_label(start, KFP_ACCESS_LABEL, "true")
        set_resources(start, "light")
    return check.outputs["Output"]


def compile_drift_pipeline(
    output: str, image: str | None = None, backend: tuple[int, int] | None = None, resources: object = None
) -> str:
    """Writes the drift pipeline as KFP YAML (every component on `image` when given) for KFP backend
    `backend` (None: the newest; refused in one line when it uses a feature that backend lacks);
    `resources`, a TaskResources, for the drift check's CPU and memory."""
    from pathlib import Path

    import yaml

    from churnflow.pipelines.kubeflow import compile_pipeline

    compile_pipeline(output, image=image, pipeline=drift_check_pipeline, backend=backend, resources=resources)
    if image:
        path = Path(output)
        documents = list(yaml.safe_load_all(path.read_text()))
        # the retrain step starts the training pipeline on the image this pipeline runs
        documents[0]["root"]["inputDefinitions"]["parameters"]["train_image"]["defaultValue"] = image
        path.write_text(yaml.safe_dump_all(documents, sort_keys=True))
    return output
