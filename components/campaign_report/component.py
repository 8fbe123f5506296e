"""KFP wrapper of the campaign report (logic in logic.py and churnflow/campaigns/measurement.py)."""

from kfp.dsl import HTML, Artifact, Metrics, Output

from churnflow.components.image import churnflow_component


@churnflow_component
def campaign_report_op(
    plan_uri: str,
    outcomes_uri: str,
    report: Output[HTML],
    report_json: Output[Artifact],
    metrics: Output[Metrics],
) -> None:
    """Measures a campaign against its control group (the numbers in `metrics`, the details in the report).

    `plan_uri` is a plan directory (`churnflow plan --output`, or the scoring pipeline's `plan` artifact),
    `outcomes_uri` a table with the call list's id column and `churned`; both go through churnflow's
    storage layer, so s3:// and gs:// work as for scoring.
    """
    from churnflow.components.campaign_report.logic import headline_metrics, report_step

    result = report_step(plan_uri, outcomes_uri, report.path, report_json.path)
    for name, value in headline_metrics(result).items():
        metrics.log_metric(name, value)
