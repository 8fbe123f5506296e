"""KFP wrapper of the deploy step (logic in logic.py)."""

from kfp.dsl import Artifact, Input, Model, Output

from churnflow.components.image import churnflow_component


@churnflow_component
def deploy_op(
    model: Input[Model],
    report: Input[Artifact],
    model_name: str,
    namespace: str,
    serve_image: str,
    pipeline_run: str,
    local_release_dir: str,
    deploy_mode: str,
    canary_percent: int,
    ready_timeout_seconds: float,
    storage_service_account: str,
    deployment_mode: str,
    inferenceservice: Output[Artifact],
    store_secret: str = "",
):
    """Renders the InferenceService for the new model; locally, also releases the model directory."""
    import json

    from churnflow.components.deploy.logic import deploy

    with open(report.path) as handle:
        evaluation = json.load(handle)
    deploy(
        model.path,
        model.uri,
        evaluation,
        inferenceservice.path,
        name=model_name,
        namespace=namespace,
        image=serve_image,
        model_version=model.metadata.get("model_version", ""),
        pipeline_run=pipeline_run,
        local_release_dir=local_release_dir,
        mode=deploy_mode,
        canary_percent=canary_percent,
        ready_timeout_seconds=ready_timeout_seconds,
        service_account=storage_service_account,
        deployment_mode=deployment_mode,
        store_secret=store_secret,
    )
    print(f"deploy: InferenceService {namespace}/{model_name} for {model.uri}")
