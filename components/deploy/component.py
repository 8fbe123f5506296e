"""KFP wrapper of the deploy step (logic in logic.py)."""

from kfp.dsl import Artifact, Input, Metrics, Model, Output

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
    deploy_action: str,
    canary_percent: int,
    ready_timeout_seconds: float,
    storage_service_account: str,
    deployment_mode: str,
    store_secret: str,
    canary_bake_seconds: float,
    prometheus_url: str,
    canary_max_error_ratio_increase: float,
    canary_max_p99_ratio: float,
    canary_min_requests: int,
    inferenceservice: Output[Artifact],
    rollout: Output[Artifact],
    rollout_metrics: Output[Metrics],
):
    """Renders the InferenceService for the new model; locally, also releases the model directory.
    With `deploy_action` "apply" rolls it out; `rollout` (JSON) and `rollout_metrics` carry a canary's
    numbers and decision. No defaults here: KFP copies only this function's source into the task, and the
    pipeline passes every value (its parameters' defaults come from components/deploy/canary.py)."""
    import json

    from churnflow.components.deploy.canary import CanaryPolicy, metrics
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
        action=deploy_action,
        canary_percent=canary_percent,
        ready_timeout_seconds=ready_timeout_seconds,
        service_account=storage_service_account,
        deployment_mode=deployment_mode,
        store_secret=store_secret,
        canary=CanaryPolicy(
            prometheus_url=prometheus_url,
            bake_seconds=canary_bake_seconds,
            max_error_ratio_increase=canary_max_error_ratio_increase,
            max_p99_ratio=canary_max_p99_ratio,
            min_requests=canary_min_requests,
        ),
        rollout_report_path=rollout.path,
    )
    with open(rollout.path) as handle:
        for key, value in metrics(json.load(handle)).items():
            rollout_metrics.log_metric(key, value)
    print(f"deploy: InferenceService {namespace}/{model_name} for {model.uri}")
