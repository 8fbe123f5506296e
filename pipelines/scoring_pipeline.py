"""The scoring pipeline: list shards → ParallelFor(score one shard) → merge → plan.

On a cluster each shard is its own pod (at most `parallelism` at once, fixed when compiling: KFP
takes it as a number, not a run parameter); the table and the model are storage URIs and every
output is a KFP artifact in the pipeline root. Locally `run_scoring_local` runs the same function
through kfp.local, on the model `churnflow run` released.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfp import dsl

from churnflow.components.batch_score.component import list_shards_op, merge_scores_op, plan_op, score_shard_op

PIPELINE_NAME = "churnflow-scoring"
DEFAULT_PARALLELISM = 8
# Requests and limits per task: scoring streams in batches, so memory is bounded by batch_rows
# (about 1 GiB at the default 200,000 rows); the merge holds one chunk per shard.
SHARD_RESOURCES = {"cpu_request": "1", "cpu_limit": "2", "memory_request": "1Gi", "memory_limit": "2Gi"}
LIGHT_RESOURCES = {"cpu_request": "100m", "cpu_limit": "500m", "memory_request": "256Mi", "memory_limit": "512Mi"}
MERGE_RESOURCES = {"cpu_request": "1", "cpu_limit": "2", "memory_request": "2Gi", "memory_limit": "4Gi"}


def _resources(task: Any, resources: dict[str, str]) -> Any:
    return (
        task.set_cpu_request(resources["cpu_request"])
        .set_cpu_limit(resources["cpu_limit"])
        .set_memory_request(resources["memory_request"])
        .set_memory_limit(resources["memory_limit"])
    )


def make_scoring_pipeline(parallelism: int = DEFAULT_PARALLELISM) -> Any:
    """The pipeline function with `parallelism` shards scored at once."""

    @dsl.pipeline(name=PIPELINE_NAME, description="Score the customer base in shards, rank it and plan the campaign.")
    def churn_scoring_pipeline(
        model_uri: str,
        data_uri: str,
        dataset_config: str = "",
        output_uri: str = "",
        max_shards: int = 0,
        batch_rows: int = 200_000,
        contact_cost: float = 5.0,
        offer_cost: float = 20.0,
        save_rate: float = 0.3,
        budget: float = 0.0,
        top: int = 0,
        control_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        shards = _resources(list_shards_op(data_uri=data_uri, max_shards=max_shards), LIGHT_RESOURCES)
        with dsl.ParallelFor(shards.output, parallelism=parallelism, name="score-shards") as shard:
            scored = _resources(
                score_shard_op(model_uri=model_uri, shard=shard, dataset_config=dataset_config, batch_rows=batch_rows),
                SHARD_RESOURCES,
            )
        campaign = {
            "contact_cost": contact_cost,
            "offer_cost": offer_cost,
            "save_rate": save_rate,
            "budget": budget,
            "top": top,
            "control_fraction": control_fraction,
            "seed": seed,
        }
        merged = _resources(
            merge_scores_op(
                scores=dsl.Collected(scored.outputs["scores"]),
                rejects=dsl.Collected(scored.outputs["rejects"]),
                summaries=dsl.Collected(scored.outputs["summary"]),
                output_uri=output_uri,
                **campaign,
            ),
            MERGE_RESOURCES,
        )
        _resources(
            plan_op(
                scores=merged.outputs["merged"],
                model_uri=model_uri,
                data_uri=data_uri,
                dataset_config=dataset_config,
                **campaign,
            ),
            SHARD_RESOURCES,
        )

    return churn_scoring_pipeline


churn_scoring_pipeline = make_scoring_pipeline()


@dataclass(frozen=True)
class LocalScoring:
    output_dir: Path
    metrics: dict[str, float]
    scores: Path
    call_list: Path
    report: Path


def run_scoring_local(output_dir: str | Path, runner: Any = None, **arguments: Any) -> LocalScoring:
    """Runs the scoring pipeline through kfp.local (`runner`: see run_in_kfp_local); returns where its
    artifacts landed."""
    from churnflow.pipelines.local import run_in_kfp_local

    output_dir = Path(output_dir).absolute()
    output_dir.mkdir(parents=True, exist_ok=True)
    run_in_kfp_local(
        lambda: churn_scoring_pipeline(**arguments), output_dir / ".kfp", output_dir / "scoring.log", runner
    )
    root = output_dir / ".kfp"
    merge = max(root.rglob("merge-scores-op*"), key=lambda p: p.stat().st_mtime)
    plan = max(root.rglob("plan-op*"), key=lambda p: p.stat().st_mtime)
    executor_output = json.loads((merge / "executor_output.json").read_text())
    metrics = executor_output["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    return LocalScoring(
        output_dir=output_dir,
        metrics=metrics,
        scores=next(p for p in merge.rglob("merged") if p.is_file()),
        call_list=next(p for p in plan.rglob("call_list") if p.is_file()),
        report=next(p for p in merge.rglob("report") if p.is_file()),
    )
