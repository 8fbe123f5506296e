"""KFP wrappers of the scoring steps (logic in logic.py): list shards, score one, merge, plan."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from churnflow.components.image import churnflow_component


@churnflow_component
def list_shards_op(data_uri: str, max_shards: int) -> list:
    """The customer table's files, one shard each (grouped when there are more than max_shards)."""
    from churnflow.components.batch_score.logic import list_shards

    shards = list_shards(data_uri, max_shards)
    print(f"list shards: {len(shards)} shard(s) in {data_uri}")
    return shards


@churnflow_component
def score_shard_op(
    model_uri: str,
    shard: str,
    dataset_config: str,
    batch_rows: int,
    scores: Output[Dataset],
    rejects: Output[Dataset],
    summary: Output[Artifact],
) -> None:
    """Scores one shard with the released model, exactly as `churnflow score` does."""
    import json

    from churnflow.components.batch_score.logic import score_shard

    result = score_shard(model_uri, shard, dataset_config, scores.path, rejects.path, batch_rows)
    with open(summary.path, "w") as handle:
        json.dump(result, handle)
    print(f"score shard {shard}: {result['rows_scored']} scored, {result['rows_rejected']} rejected")


@churnflow_component
def merge_scores_op(
    scores: Input[list[Dataset]],
    rejects: Input[list[Dataset]],
    summaries: Input[list[Artifact]],
    output_uri: str,
    contact_cost: float,
    offer_cost: float,
    save_rate: float,
    budget: float,
    top: int,
    control_fraction: float,
    seed: int,
    merged: Output[Dataset],
    merged_rejects: Output[Dataset],
    report: Output[HTML],
    metrics: Output[Metrics],
) -> None:
    """Ranks the whole base from the shards; logs rows, rejects, value at risk and expected saving."""
    import json

    from churnflow.campaigns.plan import Campaign
    from churnflow.components.batch_score.logic import merge_shards, report_html

    campaign = Campaign.from_parameters(
        contact_cost=contact_cost,
        offer_cost=offer_cost,
        save_rate=save_rate,
        budget=budget,
        top=top,
        control_fraction=control_fraction,
        seed=seed,
    )
    loaded = []
    for artifact in summaries:
        with open(artifact.path) as handle:
            loaded.append(json.load(handle))
    totals = merge_shards(
        [a.path for a in scores],
        [a.path for a in rejects],
        loaded,
        merged.path,
        merged_rejects.path,
        campaign,
        output_uri=output_uri,
    )
    report_html(totals, report.path)
    for name in ("rows", "rejects", "total_value_at_risk", "expected_saving", "shards", "predicted_churners"):
        metrics.log_metric(name, float(totals[name]))
    print(
        f"merge: {totals['rows']} rows from {totals['shards']} shards, {totals['rejects']} rejects, "
        f"value at risk {totals['total_value_at_risk']:.2f}, expected saving {totals['expected_saving']:.2f}"
    )


@churnflow_component
def plan_op(
    scores: Input[Dataset],
    model_uri: str,
    data_uri: str,
    dataset_config: str,
    contact_cost: float,
    offer_cost: float,
    save_rate: float,
    budget: float,
    top: int,
    control_fraction: float,
    seed: int,
    call_list: Output[Dataset],
    plan: Output[Artifact],
) -> float:
    """The call list with reasons and the campaign's charts; returns the expected net saving."""
    import os
    import shutil
    import tempfile

    from churnflow.campaigns.plan import Campaign, explain_list, make_plan, read_scores, write_plan
    from churnflow.core.config import parse_config_text

    campaign = Campaign.from_parameters(
        contact_cost=contact_cost,
        offer_cost=offer_cost,
        save_rate=save_rate,
        budget=budget,
        top=top,
        control_fraction=control_fraction,
        seed=seed,
    )
    campaign.check_affordable()
    table, id_column = read_scores(scores.path, fmt="parquet")
    result = make_plan(table, id_column, campaign)
    config = parse_config_text(dataset_config, "dataset_config") if dataset_config else None
    explain_list(result, model_uri, data_uri, config)
    with tempfile.TemporaryDirectory() as directory:
        paths = write_plan(result, directory)
        shutil.copyfile(paths["call_list"], call_list.path)
        os.makedirs(plan.path, exist_ok=True)
        # call_list too: the plan artifact is then a whole plan directory, what campaign-report reads
        for name in ("plan", "call_list", "expected_saving", "cumulative_gains"):
            shutil.copy(paths[name], plan.path)
    print(f"plan: contact {result.contacted}, expected net saving {result.expected_saving:.2f}")
    return result.expected_saving
