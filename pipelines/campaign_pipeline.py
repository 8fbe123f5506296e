"""The campaign-report pipeline: once a campaign's outcomes are known, measure it against its control group.

    campaign-report(plan_uri, outcomes_uri) ─► report (HTML), report_json, metrics

`plan_uri` is the scoring pipeline's `plan` artifact (a directory with call_list.csv and plan.json) or
any `churnflow plan --output` directory copied to storage; `outcomes_uri` a table with the call
list's id column and `churned`. Both are read through churnflow's storage layer, as scoring reads its
table. Caching is off: the outcomes table may be rewritten in place as late outcomes arrive.
"""

from pathlib import Path
from typing import Any

from kfp import dsl

from churnflow.components.campaign_report.component import campaign_report_op
from churnflow.pipelines.resources import set_resources

PIPELINE_NAME = "churnflow-campaign-report"


@dsl.pipeline(name=PIPELINE_NAME, description="Measure a churn campaign against its randomized control group.")
def campaign_report_pipeline(plan_uri: str, outcomes_uri: str) -> None:
    task = campaign_report_op(plan_uri=plan_uri, outcomes_uri=outcomes_uri)
    task.set_caching_options(False)
    set_resources(task, "light")


def run_campaign_report_local(output_dir: str | Path, **arguments: Any) -> Path:
    """Runs the pipeline through kfp.local; returns the task's output directory."""
    from churnflow.pipelines.local import run_in_kfp_local

    output_dir = Path(output_dir).absolute()
    output_dir.mkdir(parents=True, exist_ok=True)
    run_in_kfp_local(lambda: campaign_report_pipeline(**arguments), output_dir / ".kfp", output_dir / "campaign.log")
    return max((output_dir / ".kfp").rglob("campaign-report-op*"), key=lambda p: p.stat().st_mtime)
