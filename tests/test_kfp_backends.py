"""Issue 12 item 1: churnflow runs on the KFP backends Kubeflow 1.9/1.10 ship (2.2 to 2.5).

The compiled YAML is checked for every construct the backend table declares (fan-in of loop outputs,
Secret-as-env fields older drivers reject); `submit`/`upload`/`schedule` read the backend's version from
the API double's healthz and compile for it, or refuse in one line."""

import json
from pathlib import Path

import pytest
import yaml
from kfp import dsl, kubernetes

from churnflow.cli import main
from churnflow.components.tune import halving
from churnflow.components.tune.logic import candidates, score_item, tune_in_one_task
from churnflow.core.errors import ChurnflowError
from churnflow.core.hyperparameters import ForestParams
from churnflow.pipelines.backends import FEATURES, NEWEST, beyond, features_used, parse_version
from churnflow.pipelines.kubeflow import compile_pipeline

from .kfp_api import KfpApi

KUBEFLOW_BACKENDS = [(2, 2), (2, 3), (2, 4), (2, 5)]  # Kubeflow 1.9 and 1.10


def documents(path: Path) -> list[dict]:
    return list(yaml.safe_load_all(path.read_text()))


def tasks(spec: dict) -> set[str]:
    names = set(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        names |= set(component.get("dag", {}).get("tasks", {}))
    return names


def test_the_newest_dag_uses_the_fan_in_and_the_table_finds_it(tmp_path: Path) -> None:
    spec = documents(compile_pipeline(tmp_path / "new.yaml"))
    used = features_used(spec)
    # one fan-in per rung of the search, in the large-table branch (comp-condition-3)
    assert used["collected"] == [
        "comp-condition-3/for-loop-4",
        "comp-condition-3/for-loop-5",
        "comp-condition-3/for-loop-6",
    ]
    # the small-table branch's choice or the fan-out's, joined by dsl.OneOf for train
    assert used["oneof"] == ["comp-condition-branches-1"]
    # the Secrets (data for preprocess: name a parameter, `optional: false` written by kfp-kubernetes) and
    # the task resources as strings; the run's name handed to train and deploy
    assert set(used) == {
        "collected",
        "oneof",
        "optional_secret_env",
        "secret_name_parameter",
        "resource_strings",
        "run_placeholders",
    }
    assert used["secret_name_parameter"] == ["exec-preprocess-op"]
    assert sorted(used["run_placeholders"]) == ["comp-condition-7/deploy-op", "root/train-op"]
    assert FEATURES["collected"].needs <= NEWEST
    assert beyond(spec, (2, 4)) == ["collected", "optional_secret_env", "run_placeholders", "secret_name_parameter"]
    assert beyond(spec, NEWEST) == []


@pytest.mark.parametrize("backend", [*KUBEFLOW_BACKENDS, (2, 13), (2, 14), NEWEST])
def test_compiled_for_a_backend_uses_nothing_beyond_it(tmp_path: Path, backend: tuple[int, int]) -> None:
    spec = documents(compile_pipeline(tmp_path / "p.yaml", image="r.example/train:1", backend=backend))
    assert beyond(spec, backend) == []
    text = yaml.safe_dump_all(spec)
    if backend < FEATURES["collected"].needs:  # tuning in one task: no loop, no fan-in
        assert "tune-op" in tasks(spec[0]) and "parameterIterator" not in text
        assert not {"candidates-op", "cv-score-op", "next-rung-op", "select-params-op"} & tasks(spec[0])
        train_inputs = spec[0]["root"]["dag"]["tasks"]["train-op"]["inputs"]["parameters"]
        assert train_inputs["selection"]["taskOutputParameter"]["producerTask"] == "tune-op"
    else:
        assert "collected" in features_used(spec)


def test_cli_compile_for_an_old_backend(tmp_path: Path, capsys) -> None:
    assert main(["compile", "--output", str(tmp_path / "p.yaml"), "--kfp-backend", "2.4"]) == 0
    assert "runs on KFP backend 2.4 or newer" in capsys.readouterr().out  # 2.4 reads resources as strings
    assert main(["compile", "--output", str(tmp_path / "n.yaml")]) == 0
    # kfp-kubernetes writes `optional: false` on every Secret-as-env, which only 2.15 reads
    assert "runs on KFP backend 2.15 or newer" in capsys.readouterr().out
    assert set(features_used(documents(tmp_path / "p.yaml"))) == {"resource_strings"}
    assert main(["compile", "--output", str(tmp_path / "q.yaml"), "--kfp-backend", "latest"]) == 2
    assert "--kfp-backend: expected a KFP backend version such as 2.4" in capsys.readouterr().err


@dsl.component(base_image="python:3.11")  # no `from __future__ import annotations` here: KFP reads them
def _hello() -> str:
    return "hello"


@dsl.pipeline(name="required-secret")
def _required_secret() -> None:
    kubernetes.use_secret_as_env(_hello(), "store", {"url": "STORE_URL"})


@dsl.pipeline(name="optional-secret")
def _optional_secret() -> None:
    kubernetes.use_secret_as_env(_hello(), "store", {"url": "STORE_URL"}, optional=True)


def test_secret_fields_old_drivers_reject_are_dropped_or_refused(tmp_path: Path) -> None:
    newest = documents(compile_pipeline(tmp_path / "a.yaml", pipeline=_required_secret))
    assert set(features_used(newest)) == {"optional_secret_env", "secret_name_parameter"}
    old = documents(compile_pipeline(tmp_path / "b.yaml", pipeline=_required_secret, backend=(2, 4)))
    (secret,) = old[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-hello"]["secretAsEnv"]
    assert secret == {"keyToEnv": [{"envVar": "STORE_URL", "secretKey": "url"}], "secretName": "store"}
    with pytest.raises(ChurnflowError) as refused:
        compile_pipeline(tmp_path / "c.yaml", pipeline=_optional_secret, backend=(2, 5))
    assert str(refused.value) == (
        "pipeline 'optional-secret' uses a Secret as env marked optional (use_secret_as_env(optional=...)), "
        "which needs KFP backend 2.15 or newer; this backend is 2.5"
    )
    compile_pipeline(tmp_path / "d.yaml", pipeline=_optional_secret, backend=(2, 15))
    with pytest.raises(ChurnflowError, match="runs KFP v1 pipelines only"):
        compile_pipeline(tmp_path / "e.yaml", backend=(1, 8))


def test_the_drift_pipeline_declares_what_it_uses(tmp_path: Path) -> None:
    from churnflow.pipelines.drift_pipeline import compile_drift_pipeline

    spec = documents(Path(compile_drift_pipeline(str(tmp_path / "drift.yaml"))))
    assert features_used(spec)["pod_metadata"] == ["exec-retrain-op"]
    assert "pod_metadata" in beyond(spec, (2, 0)) and "pod_metadata" not in beyond(spec, (2, 1))


def test_backend_versions_parse_as_the_api_reports_them() -> None:
    assert parse_version("2.5.0") == (2, 5) and parse_version("v2.14.1") == (2, 14)
    assert parse_version("2.15.0-rc.1") == (2, 15) and parse_version("2.4") == (2, 4)
    for bad in ("unknown", "", "2", "two.four"):
        with pytest.raises(ChurnflowError):
            parse_version(bad)


def test_tuning_in_one_task_chooses_what_the_fan_out_chooses(model_dir: Path) -> None:
    """tune_op (backends before 2.14) runs the rungs' own functions in one pod: same rungs, same choice."""
    root = model_dir.parent
    listed = candidates(ForestParams(n_estimators=10), True, '{"min_samples_leaf": [1, 20]}')
    together = tune_in_one_task(root / "train", root / "contract", listed, folds=3)
    rows = together["halving"]["train_rows"]
    items = halving.start(listed, rows, halving.DEFAULT_MIN_ROWS)
    for _ in range(halving.RUNGS - 1):
        items = halving.advance([score_item(root / "train", root / "contract", i, folds=3) for i in items])
    fanned = halving.finish([score_item(root / "train", root / "contract", i, folds=3) for i in items])
    assert together["halving"]["rungs"][0] == {"rung": 0, "rows": rows, "candidates": [0, 1]}
    same = ("best", "metric", "rule", "highest_params", "tolerance", "halving")
    assert {k: together[k] for k in same} == {k: fanned[k] for k in same}
    for one, other in zip(fanned["candidates"], together["candidates"], strict=True):  # fits agree to ~1e-5
        assert one["index"] == other["index"] and one["fold_scores"] == pytest.approx(other["fold_scores"], abs=1e-4)


def run_spec(body: dict) -> dict:
    spec = body["pipeline_spec"]
    return spec.get("pipeline_spec", spec)


@pytest.mark.parametrize(
    ("version", "fan_in"), [("2.2.0", False), ("2.4.0", False), ("2.5.0", False), ("2.14.0", True), ("unknown", False)]
)
def test_submit_compiles_for_the_backend_the_api_reports(kfp_api: KfpApi, version: str, fan_in: bool) -> None:
    kfp_api.version = version
    assert main(["submit", "--host", kfp_api.url]) == 0
    (run,) = kfp_api.posted("/apis/v2beta1/runs")
    spec = run_spec(run)
    assert ("collected" in features_used([spec])) is fan_in
    assert "tune-op" in tasks(spec)  # on its own before 2.14; from 2.14 the small-table branch
    assert ("cv-score-op" in tasks(spec)) is fan_in
    (created,) = kfp_api.runs.values()
    assert created["state"] == "PENDING", created.get("error")


def test_upload_and_schedule_compile_for_the_backend_too(kfp_api: KfpApi) -> None:
    kfp_api.version = "2.3.1"
    assert main(["upload", "--host", kfp_api.url]) == 0
    (pipeline,) = kfp_api.pipelines.values()
    assert features_used(pipeline["spec"]) == {}
    assert main(["schedule", "--host", kfp_api.url, "--cron", "0 0 3 * * *"]) == 0
    (job,) = kfp_api.posted("/apis/v2beta1/recurringruns")
    assert "tune-op" in tasks(run_spec(job))
    assert next(iter(kfp_api.recurring_runs.values()))["runs_would_fail_with"] is None


def test_an_explicit_backend_overrides_the_reported_one(kfp_api: KfpApi) -> None:
    kfp_api.version = "2.14.0"
    assert main(["submit", "--host", kfp_api.url, "--kfp-backend", "2.4"]) == 0
    (run,) = kfp_api.posted("/apis/v2beta1/runs")
    assert "tune-op" in tasks(run_spec(run))
    # named wrongly, a newer DAG reaches an older backend, whose driver fails the run (as the double shows)
    kfp_api.version = "2.4.0"
    assert main(["submit", "--host", kfp_api.url, "--kfp-backend", "2.14"]) == 0
    failed = list(kfp_api.runs.values())[-1]
    assert failed["state"] == "FAILED" and "ParallelFor" in failed["error"]["message"]


def test_a_v1_backend_is_refused_in_one_line(kfp_api: KfpApi, capsys) -> None:
    kfp_api.version = "1.8.5"
    assert main(["submit", "--host", kfp_api.url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "KFP backend 1.8 runs KFP v1 pipelines only" in err
    assert kfp_api.posted("/apis/v2beta1/runs") == []


@pytest.mark.slow
def test_the_dag_for_old_backends_runs_end_to_end(tmp_path: Path) -> None:
    """kfp.local runs the DAG compiled for backend 2.4: the one tuning task scores every candidate and
    train fits the one it chose (that it chooses as the fan-out does is the unit test above)."""
    from churnflow.components.tune.selection import select_best
    from churnflow.core.config import load_config
    from churnflow.pipelines.churn_pipeline import training_pipeline
    from churnflow.pipelines.local import run_local

    arguments = {"tuning_grid": '{"min_samples_leaf": [1, 10]}', "cv_folds": 2, "n_estimators": 20}
    run = run_local(
        tmp_path, config=load_config(None), rows=400, arguments=arguments, pipeline=training_pipeline((2, 4))
    )
    metadata = json.loads((run.output_dir / "candidate" / "metadata.json").read_text())
    tuning = metadata["tuning"]
    assert sorted(c["params"]["min_samples_leaf"] for c in tuning["candidates"]) == [1, 10]
    assert tuning["best"] == select_best(tuning["candidates"])["best"]  # the fan-out's rule, same candidates
    assert metadata["hyperparameters"]["min_samples_leaf"] == tuning["best"]["min_samples_leaf"]
    assert run.metrics["roc_auc"] > 0.6


@dsl.pipeline(name="resources")
def _with_resources(cpu_limit: str = "2", memory_limit: str = "4Gi") -> None:
    _hello().set_cpu_request("500m").set_memory_request("1Gi").set_cpu_limit(cpu_limit).set_memory_limit(memory_limit)


@dsl.pipeline(name="resources-from-a-task")
def _resources_from_a_task() -> None:
    _hello().set_cpu_limit(_hello().output)


def test_resource_strings_become_the_fields_old_backends_read(tmp_path: Path) -> None:
    """Backends before 2.4 parse specs with a proto that has no resourceCpuLimit & co.: constants and
    pipeline parameters (fixed to the run's value or their default) become the numeric fields."""
    newest = documents(compile_pipeline(tmp_path / "a.yaml", pipeline=_with_resources))
    assert "resource_strings" in features_used(newest)
    old = documents(compile_pipeline(tmp_path / "b.yaml", pipeline=_with_resources, backend=(2, 3)))
    resources = old[0]["deploymentSpec"]["executors"]["exec-hello"]["container"]["resources"]
    assert resources == {"cpuRequest": 0.5, "memoryRequest": 1.073741824, "cpuLimit": 2.0, "memoryLimit": 4.294967296}
    arguments = {"cpu_limit": "1500m"}
    fixed = documents(
        compile_pipeline(tmp_path / "c.yaml", pipeline=_with_resources, backend=(2, 3), arguments=arguments)
    )
    assert fixed[0]["deploymentSpec"]["executors"]["exec-hello"]["container"]["resources"]["cpuLimit"] == 1.5
    kept = documents(compile_pipeline(tmp_path / "d.yaml", pipeline=_with_resources, backend=(2, 4)))
    assert "resourceCpuLimit" in kept[0]["deploymentSpec"]["executors"]["exec-hello"]["container"]["resources"]
    with pytest.raises(ChurnflowError, match=r"CPU/memory .* needs KFP backend 2.4 or newer; this backend is 2.3"):
        compile_pipeline(tmp_path / "e.yaml", pipeline=_resources_from_a_task, backend=(2, 3))


def _run_name_inputs(spec: dict) -> dict[str, object]:
    """task → the constant its `pipeline_run` input gets (train and deploy take the run's name)."""
    found = {}
    for dag in [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]:
        for name, task in dag.get("tasks", {}).items():
            value = task.get("inputs", {}).get("parameters", {}).get("pipeline_run")
            if value is not None:
                found[name] = value["runtimeValue"]["constant"]
    return found


@pytest.mark.parametrize("backend", [(2, 2), (2, 3), (2, 4)])
def test_no_run_placeholder_reaches_a_backend_before_2_5(tmp_path: Path, backend: tuple[int, int]) -> None:
    """Issue 21, 2f: drivers before 2.5 pass {{$.pipeline_job_name}} on as text, which would become the
    InferenceService's run label and annotation and the model's metadata; for them the run name is empty
    (no placeholder older drivers resolve can stand in: they all arrived in KFP PR 11599)."""
    spec = documents(compile_pipeline(tmp_path / "p.yaml", backend=backend))
    text = yaml.safe_dump_all(spec)
    assert "pipeline_job_name" not in text and "{{$.pipeline_" not in text
    assert _run_name_inputs(spec[0]) == {"train-op": "", "deploy-op": ""}
    assert "run_placeholders" not in features_used(spec)
    kept = documents(compile_pipeline(tmp_path / "new.yaml", backend=(2, 5)))
    assert _run_name_inputs(kept[0]) == {"train-op": "{{$.pipeline_job_name}}", "deploy-op": "{{$.pipeline_job_name}}"}


def test_the_api_double_fails_a_run_placeholder_on_a_backend_before_2_5(kfp_api: KfpApi) -> None:
    """Named wrongly (--kfp-backend 2.5 for a 2.4 server), the run name reaches a 2.4 driver as text: the
    double fails the run naming the task and input, as the literal text would otherwise reach labels."""
    kfp_api.version = "2.4.1"
    assert main(["submit", "--host", kfp_api.url, "--kfp-backend", "2.5"]) == 0
    (run,) = kfp_api.runs.values()
    assert run["state"] == "FAILED"
    assert run["error"]["message"] == (
        "KFP driver 2.4: task 'train-op' would get input 'pipeline_run' as the literal text "
        "'{{$.pipeline_job_name}}' (run placeholders need 2.5)"
    )
    kfp_api.version = "2.5.0"
    assert main(["submit", "--host", kfp_api.url, "--kfp-backend", "2.5"]) == 0
    assert list(kfp_api.runs.values())[-1]["state"] == "PENDING"


def test_the_api_double_fails_pod_metadata_on_a_2_0_driver(kfp_api: KfpApi) -> None:
    """The drift pipeline's retrain label (PodDefault selector) is podMetadata, which the 2.0 driver cannot
    unmarshal; churnflow refuses to compile it for 2.0, and a spec compiled for 2.1 fails on 2.0."""
    from churnflow.pipelines.drift_pipeline import drift_check_pipeline
    from churnflow.pipelines.kubeflow import submit_run

    arguments = {"model_uri": "s3://m/model", "evaluation_uri": "s3://m/report"}
    kfp_api.version = "2.0.5"
    with pytest.raises(ChurnflowError, match=r"pod labels or annotations .* needs KFP backend 2.1"):
        submit_run(kfp_api.url, arguments, pipeline=drift_check_pipeline)
    submit_run(kfp_api.url, arguments, pipeline=drift_check_pipeline, backend=(2, 1))
    (run,) = kfp_api.runs.values()
    assert run["state"] == "FAILED"
    assert run["error"]["message"] == 'KFP driver: failed to unmarshal Kubernetes config: unknown field "podMetadata"'


@dsl.component(base_image="python:3.11")
def _echo(text: str) -> str:
    return text


@dsl.pipeline(name="one-of")
def _one_of(small: bool = True) -> None:
    with dsl.If(small == True):  # noqa: E712
        one = _echo(text="one task")
    with dsl.Else():
        many = _echo(text="fan-out")
    _echo(text=dsl.OneOf(one.output, many.output))


def test_a_one_of_is_refused_before_2_4_and_the_double_fails_it_there(kfp_api: KfpApi) -> None:
    """Issue 23: the training DAG joins its small-table and fan-out branches with dsl.OneOf, whose output a
    driver resolves from 2.4 on (PR 11196); churnflow refuses it for 2.3, and a spec compiled for 2.4
    fails on a 2.3 driver as the real one does."""
    from churnflow.pipelines.kubeflow import submit_run

    kfp_api.version = "2.3.0"
    with pytest.raises(ChurnflowError, match=r"dsl.OneOf .* needs KFP backend 2.4 or newer; this backend is 2.3"):
        submit_run(kfp_api.url, {}, pipeline=_one_of)
    submit_run(kfp_api.url, {}, pipeline=_one_of, backend=(2, 4))
    (run,) = kfp_api.runs.values()
    assert run["state"] == "FAILED"
    assert run["error"]["message"] == (
        "KFP driver 2.3: task 'echo-3': cannot find output parameter key "
        "'pipelinechannel--condition-branches-1-oneof-1' in producer task 'condition-branches-1'"
    )
    kfp_api.version = "2.4.0"
    submit_run(kfp_api.url, {}, pipeline=_one_of, backend=(2, 4))
    assert list(kfp_api.runs.values())[-1]["state"] == "PENDING"
