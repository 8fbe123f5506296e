"""KFP wrapper of the drift check (logic in logic.py); the retrain step that follows it on drift is
churnflow/pipelines/retraining.py's `retrain_op`, since it compiles and starts the training pipeline."""

from kfp.dsl import HTML, Artifact, Input, Metrics, Model, Output

from churnflow.components.image import churnflow_component


@churnflow_component
def drift_check_op(
    store_url: str,
    model: Input[Model],
    evaluation: Input[Artifact],
    model_name: str,
    window: int,
    psi_watch: float,
    psi_act: float,
    alpha: float,
    precision_drop: float,
    min_rows: int,
    min_labelled: int,
    report: Output[HTML],
    report_json: Output[Artifact],
    prometheus: Output[Artifact],
    metrics: Output[Metrics],
    pushgateway: str = "",
    namespace: str = "",
) -> bool:
    """Checks the store's newest `window` predictions for data, prediction and accuracy drift.

    Returns whether to retrain: only a DRIFT verdict (the pipeline's dsl.If reads it); "not judged" (too
    few predictions of this model version while the window holds other versions') and "no drift" do not.
    An empty `store_url` reads CHURNFLOW_STORE_URL, which the pipeline fills from the store Secret. With
    `pushgateway` set, the results go to that Prometheus Pushgateway (where the precision-drop alert
    reads them); a failed push is reported in the log and does not stop the check's verdict from acting.
    """
    import os
    import shutil
    import tempfile

    from churnflow.components.drift_check.logic import check
    from churnflow.monitoring.drift import NOT_JUDGED, Thresholds, summary
    from churnflow.monitoring.drift_report import HTML_FILE, JSON_FILE, PROM_FILE

    thresholds = Thresholds(
        psi_watch=psi_watch,
        psi_act=psi_act,
        alpha=alpha,
        precision_drop=precision_drop,
        min_rows=min_rows,
        min_labelled=min_labelled,
    )
    url = store_url or os.environ.get("CHURNFLOW_STORE_URL", "")
    with tempfile.TemporaryDirectory() as directory:
        result, verdict = check(
            url,
            model.path,
            directory,
            model_name=model_name,
            window=window,
            evaluation_path=evaluation.path,
            thresholds=thresholds,
        )
        for source, target in ((HTML_FILE, report), (JSON_FILE, report_json), (PROM_FILE, prometheus)):
            os.makedirs(os.path.dirname(target.path) or ".", exist_ok=True)
            shutil.copyfile(os.path.join(directory, source), target.path)
    metrics.log_metric("drift", 1.0 if result["drift"] else 0.0)
    metrics.log_metric("judged", 0.0 if verdict.outcome == NOT_JUDGED else 1.0)
    metrics.log_metric("other_versions_predictions", float(sum(verdict.other_versions.values())))
    metrics.log_metric("window_predictions", float(result["window"]["rows"]))
    for name, feature in result["data_drift"].get("features", {}).items():
        metrics.log_metric(f"psi_{name}", round(feature["psi"], 6))
    if result["accuracy"].get("precision_drop") is not None:
        metrics.log_metric("precision_drop", round(result["accuracy"]["precision_drop"], 6))
    print(summary(result))
    if pushgateway:
        from churnflow.core.errors import ChurnflowError
        from churnflow.monitoring.drift_report import push_report

        try:
            group = push_report(result, pushgateway, namespace=namespace)
            print(f"drift-check: results pushed to {pushgateway} (group {group})")
        except ChurnflowError as error:
            print(f"drift-check: warning: {error}")
    return verdict.retrain
