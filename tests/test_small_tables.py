"""Issue 23 item 3: a small table is tuned in one task, chosen by the DAG itself at run time.

preprocess returns the training split's row count; a dsl.If on it (against the pipeline parameter
`one_task_tuning_rows`) runs tune_op, the whole search in one task, and its dsl.Else the fan-out of
CV tasks a large table gets today; dsl.OneOf hands train whichever choice was made. Both branches
compile for every backend that can collect a fan-out and run under kfp.local, choosing alike."""

import json
import re
from pathlib import Path

import pytest
import yaml

from churnflow.pipelines.churn_pipeline import ONE_TASK_TUNING_ROWS
from churnflow.pipelines.kubeflow import compile_pipeline

FAN_OUT = {"candidates-op", "cv-score-op", "cv-score-op-2", "cv-score-op-3", "next-rung-op", "next-rung-op-2"}


def dag_tasks(spec: dict, component: str) -> dict:
    return spec["components"][component]["dag"]["tasks"]


def all_tasks(spec: dict, component: str) -> set[str]:
    """Every task under a DAG component, loops' bodies included."""
    names = set()
    for name, task in dag_tasks(spec, component).items():
        inner = spec["components"].get(task["componentRef"]["name"], {})
        names |= all_tasks(spec, task["componentRef"]["name"]) if "dag" in inner else {name}
    return names


@pytest.mark.parametrize("backend", [(2, 14), None])
def test_the_dag_tunes_a_small_split_in_one_task_and_fans_a_large_one_out(tmp_path: Path, backend) -> None:
    spec = next(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", backend=backend).read_text()))
    root = spec["root"]["dag"]["tasks"]
    assert spec["root"]["inputDefinitions"]["parameters"]["one_task_tuning_rows"]["defaultValue"] == 10_000
    assert ONE_TASK_TUNING_ROWS == 10_000
    branches = dag_tasks(spec, root["condition-branches-1"]["componentRef"]["name"])
    branches = {t["taskInfo"]["name"]: t for t in branches.values()}
    small, large = branches["small-table-tune-in-one-task"], branches["large-table-fan-out"]
    rows, limit = "pipelinechannel--preprocess-op-Output", "pipelinechannel--one_task_tuning_rows"
    condition = f"int(inputs.parameter_values['{rows}']) <= int(inputs.parameter_values['{limit}'])"
    assert small["triggerPolicy"]["condition"] == condition
    assert large["triggerPolicy"]["condition"] == f"!({condition})"
    assert all_tasks(spec, small["componentRef"]["name"]) == {"tune-op"}
    assert all_tasks(spec, large["componentRef"]["name"]) == FAN_OUT | {"select-params-op"}
    # train takes the branches' one choice (dsl.OneOf), from tune_op or select_params_op
    selection = root["train-op"]["inputs"]["parameters"]["selection"]["taskOutputParameter"]
    assert selection["producerTask"] == "condition-branches-1"
    oneof = spec["components"][root["condition-branches-1"]["componentRef"]["name"]]["dag"]["outputs"]
    selectors = oneof["parameters"][selection["outputParameterKey"]]["valueFromOneof"]["parameterSelectors"]
    assert [s["outputParameterKey"] for s in selectors] == [
        "pipelinechannel--tune-op-Output",
        "pipelinechannel--select-params-op-Output",
    ]


def executed(log: Path) -> list[str]:
    text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text())
    return re.findall(r"Executing task '([\w-]+)'", text)


@pytest.mark.slow
def test_both_branches_run_under_kfp_local_and_choose_alike(tmp_path: Path) -> None:
    """The same 400 rows through each branch: the one-task search (320 training rows ≤ the default limit)
    runs 5 tasks, the fan-out (limit 0) the rungs' tasks; both choose the same settings on the same folds."""
    from churnflow.core.config import load_config
    from churnflow.pipelines.local import run_local

    arguments = {"tuning_grid": '{"min_samples_leaf": [1, 10]}', "cv_folds": 2, "n_estimators": 20}
    runs = {}
    for name, limit in (("one-task", ONE_TASK_TUNING_ROWS), ("fan-out", 0)):
        run = run_local(
            tmp_path / name, config=load_config(None), rows=400, arguments={**arguments, "one_task_tuning_rows": limit}
        )
        runs[name] = (run, json.loads((run.output_dir / "candidate" / "metadata.json").read_text())["tuning"])
    one_task, fan_out = (executed(runs[name][0].output_dir / "pipeline.log") for name in ("one-task", "fan-out"))
    assert one_task == ["preprocess-op", "tune-op", "train-op", "evaluate-op", "deploy-op"]
    assert "tune-op" not in fan_out and set(fan_out) >= FAN_OUT and "select-params-op" in fan_out
    together, fanned = runs["one-task"][1], runs["fan-out"][1]
    same = ("best", "metric", "rule", "highest_params", "halving")
    assert {k: together[k] for k in same} == {k: fanned[k] for k in same}
    for one, other in zip(together["candidates"], fanned["candidates"], strict=True):
        assert one["index"] == other["index"] and one["fold_scores"] == pytest.approx(other["fold_scores"], abs=1e-4)
    assert runs["one-task"][0].metrics["roc_auc"] == pytest.approx(runs["fan-out"][0].metrics["roc_auc"], abs=1e-9)


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def test_a_rung_scored_side_by_side_gives_what_one_after_another_gives(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tune_op on a small split scores a rung's candidates in worker processes, one core each, and the
    repetitions of the candidates still undecided member by member: every item is scored as alone
    (same folds, same seeds), so the search and its choice are those of workers=1."""
    from churnflow.components.tune.logic import candidates, tune_in_one_task
    from churnflow.core.hyperparameters import ForestParams

    root = model_dir.parent
    # as tune_op sets it: one thread per fit, so a forest adds its trees' votes in one order (threads
    # add them in the order they finish, which can move a probability by one ulp and break a tie)
    monkeypatch.setenv("CHURNFLOW_LOOP_THREADS", "1")
    listed = candidates(
        ForestParams(n_estimators=10),
        True,
        '{"random_forest": {"min_samples_leaf": [1, 5, 20]}, "hist_gradient_boosting": {"learning_rate": [0.1]}}',
    )
    alone = tune_in_one_task(root / "train", root / "contract", listed, folds=3)
    side_by_side = tune_in_one_task(root / "train", root / "contract", listed, folds=3, workers=2)
    assert len(alone["candidates"]) == 4
    assert len(alone["halving"]["rungs"][1]["candidates"]) >= 2, "no repetitions to spread over the workers"
    assert _without_timings(side_by_side) == _without_timings(alone)


def test_pool_workers_fit_forests_on_one_thread_whatever_the_server_started_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fork server starts once per process, with the environment of that moment; its workers still
    give a forest one thread (one order of adding the trees' votes), as the side-by-side search needs."""
    from churnflow.core import workers
    from churnflow.core.hyperparameters import loop_threads

    monkeypatch.delenv("CHURNFLOW_LOOP_THREADS", raising=False)
    workers.start_server(["churnflow.components.tune.logic"])
    with workers.process_pool(2, ["churnflow.components.tune.logic"]) as pool:
        assert [pool.submit(loop_threads).result() for _ in range(4)] == [1, 1, 1, 1]
