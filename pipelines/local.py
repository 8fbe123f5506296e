"""Running the pipeline on this machine through kfp.local (SubprocessRunner, no venv, no network; or
DockerRunner, each task in the train image: docker_runner, `churnflow run --runner docker`).

`churnflow run` lands here. It runs the very pipeline function that is compiled for Kubeflow and
leaves in the output directory:

    model/            the released model (a symlink swapped atomically; only the deploy step writes it)
    candidate/        the model this run trained, released or not
    metrics.json      the evaluation metrics, the chosen model and threshold, `deployed`, and why not
    model-card.html   why this model: data, candidates, rule, metrics with intervals, charts (model_card.py)
    inferenceservice.yaml   when deployed
    pipeline.log      everything the tasks printed
    .kfp/             kfp.local's pipeline root (every task's artifacts)

The model currently in model/ is the champion the new candidate must not fall behind.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import re
import shutil
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from churnflow.core.artifact import EVALUATION_FILE, read_metadata
from churnflow.core.config import DatasetConfig, config_to_json
from churnflow.core.errors import ChurnflowError
from churnflow.core.hyperparameters import LOOP_THREADS_ENV

METRICS_FILE = "metrics.json"
LOG_FILE = "pipeline.log"
MODEL_LINK = "model"
CANDIDATE_DIR = "candidate"
CARD_FILE = "model-card.html"
T = TypeVar("T")
SUMMARY_METRICS = ("roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "brier", "threshold")
_USER_ERROR = re.compile(r"ChurnflowError: (.+)$")
_FAILED_TASK = re.compile(r"Task '?([\w-]+)'? finished with status .*FAILURE")


@dataclass(frozen=True)
class LocalRun:
    output_dir: Path
    metrics: dict[str, Any]

    @property
    def deployed(self) -> bool:
        return bool(self.metrics["deployed"])


def champion_metrics(model_link: Path) -> str:
    """The evaluation metrics of the model now released in `model_link`, as the pipeline parameter."""
    evaluation = model_link / EVALUATION_FILE
    if not evaluation.is_file():
        return ""
    return json.dumps(json.loads(evaluation.read_text())["metrics"])


def loop_task_threads() -> int:
    """Each loop task's share of this machine's cores: kfp.local runs up to two iterations of a
    ParallelFor at once (its ParallelExecutor's cap), and two tasks each spinning every core's worth
    of OpenMP threads slow each other tens of times over."""
    import os

    try:
        from kfp.local.orchestrator.enhanced_dag_orchestrator import ParallelExecutor

        side_by_side = max(1, int(ParallelExecutor().max_workers))
    except (ImportError, AttributeError, TypeError, ValueError):  # a kfp without it runs loops one at a time
        side_by_side = 1
    return max(1, len(os.sched_getaffinity(0)) // side_by_side)


@contextlib.contextmanager
def _environment(name: str, value: str) -> Any:
    import os

    before = os.environ.get(name)
    os.environ[name] = value  # the task subprocesses kfp.local starts inherit it
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _restore_root_handlers(before: list[logging.Handler]) -> None:
    """Puts back the root logger's handlers as they were before the run.

    kfp.local (2.17) swaps the root handlers for one writing to sys.stdout around every task and puts
    back what it saw on entry, but two ParallelFor iterations run in threads at once: the second
    saves the first's handler, so the run can end with that handler left in place — writing to our
    run log, closed once the run ends (a later log record prints a "Logging error" traceback) — and
    with the caller's own handlers gone."""
    logging.root.handlers[:] = before


def _failure_message(log_path: Path) -> str:
    """The one line a user needs from a failed run: the ChurnflowError a task raised, or the task name."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", log_path.read_text(errors="replace"))
    errors = [m.group(1).strip() for line in text.splitlines() if (m := _USER_ERROR.search(line))]
    if errors:
        return errors[-1]
    failed = _FAILED_TASK.findall(text)
    where = f"task {failed[-1]!r}" if failed else "the pipeline"
    return f"{where} failed; see {log_path}"


def docker_runner(
    *shared_dirs: Path, read_only: tuple[Path, ...] = (), environment: dict[str, str] | None = None
) -> Any:
    """kfp.local's DockerRunner, running each task in its component image as a cluster would: the
    image's own user and no entrypoint or user override (the task's command is the whole command).

    Containers join the host network, so anything a task calls stays on loopback. kfp.local mounts the
    pipeline root at its own path, and `shared_dirs` (e.g. the run's output folder, where the deploy
    step releases locally) are mounted the same way; the image's user is not root, so each of them is
    made writable for every user here: a host folder keeps its owner inside the container. `read_only`
    folders (input data) are mounted as they are, read-only. kfp.local gives a task no environment of
    this process: `environment` is what every task gets."""
    import docker
    from docker.types import Mount
    from kfp import local

    try:
        docker.from_env().ping()
    except docker.errors.DockerException as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ChurnflowError(f"--runner docker: the Docker engine does not answer ({reason})") from None
    mounts = []
    for directory in shared_dirs:
        directory = Path(directory).absolute()
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)
        mounts.append(Mount(target=str(directory), source=str(directory), type="bind"))
    for directory in read_only:
        directory = Path(directory).absolute()
        mounts.append(Mount(target=str(directory), source=str(directory), type="bind", read_only=True))
    extra: dict[str, Any] = {"environment": environment} if environment else {}
    return local.DockerRunner(network_mode="host", mounts=mounts, **extra)


def run_in_kfp_local(run: Callable[[], T], pipeline_root: Path, log_path: Path, runner: Any = None) -> T:
    """Calls `run` (a pipeline function, which kfp.local executes on the spot) with kfp.local set up,
    its output in `log_path`, and everything it changes in this process put back afterwards.

    By default every task is a subprocess of this machine; `runner` may be another kfp.local runner
    (docker_runner: each task in its image). Loop tasks get their share of the cores
    (LOOP_THREADS_ENV); the cluster-only CPU and memory settings are not warned about. A failure is one
    line (a task's ChurnflowError, or the failed task's name and the log), kfp.local's own errors
    included."""
    from kfp import local

    if runner is None:
        runner = local.SubprocessRunner(use_venv=False)
    else:  # the image's user writes task outputs into the pipeline root
        pipeline_root.mkdir(parents=True, exist_ok=True)
        pipeline_root.chmod(0o777)
    local.init(runner=runner, pipeline_root=str(pipeline_root), raise_on_error=True)
    original_print = builtins.print  # kfp.local indents print() inside sub-DAGs and may not restore it
    root_handlers = list(logging.root.handlers)
    with (
        _environment(LOOP_THREADS_ENV, str(loop_task_threads())),
        open(log_path, "w") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
        warnings.catch_warnings(),
    ):
        # CPU and memory are set for the cluster (pipelines/resources.py); locally they mean nothing.
        warnings.filterwarnings("ignore", message=r"Task '.*': settings .* have no effect in the current local runner")
        try:
            return run()
        except Exception:  # kfp.local raises RuntimeError naming the failed task
            traceback.print_exc()  # into the log: kfp.local's own errors name no task
        finally:
            builtins.print = original_print
            _restore_root_handlers(root_handlers)
    raise ChurnflowError(_failure_message(log_path)) from None


def run_local(
    output_dir: str | Path,
    *,
    config: DatasetConfig,
    data_uri: str = "",
    rows: int = 1000,
    arguments: dict[str, Any] | None = None,
    pipeline: Any = None,
    runner: Any = None,
) -> LocalRun:
    """Runs the whole pipeline locally and collects its results into `output_dir`.

    `pipeline` is the training pipeline by default; tests pass the variant compiled for older KFP
    backends (churn_pipeline.training_pipeline) to run it the same way. `runner` is a kfp.local runner
    (default: subprocesses; docker_runner(output_dir) runs each task in the train image)."""
    from churnflow.pipelines.churn_pipeline import churn_training_pipeline

    output_dir = Path(output_dir).absolute()
    output_dir.mkdir(parents=True, exist_ok=True)
    model_link = output_dir / MODEL_LINK
    parameters: dict[str, Any] = {
        "data_uri": data_uri,
        "dataset_config": config_to_json(config),
        "synthetic_rows": rows,
        "champion_metrics": champion_metrics(model_link),
        **(arguments or {}),
        "local_release_dir": str(model_link),
    }
    task = run_in_kfp_local(
        lambda: (pipeline or churn_training_pipeline)(**parameters), output_dir / ".kfp", output_dir / LOG_FILE, runner
    )
    evaluation = json.loads(Path(task.outputs["evaluation"].path).read_text())
    candidate = output_dir / CANDIDATE_DIR
    shutil.rmtree(candidate, ignore_errors=True)
    shutil.copytree(task.outputs["model"].path, candidate)
    metadata = read_metadata(candidate)
    shutil.copyfile(task.outputs["model_card"].path, output_dir / CARD_FILE)
    metrics = {name: evaluation["metrics"][name] for name in SUMMARY_METRICS}
    gate = evaluation["gate"]
    metrics.update(
        model_family=metadata["family"],
        params=metadata["hyperparameters"],
        base_rate=metadata["data"]["positive_rate"],
        filled_blanks=metadata["data"].get("filled_blanks", {}),
        floors={name: gate[name] for name in ("min_roc_auc", "min_f1", "min_precision", "max_brier")},
        deployed=bool(evaluation["deploy"]),
        reasons=evaluation["reasons"],
        model_version=metadata["model_version"],
        compiled=metadata["compiled"]["format"],
        rows=metadata["data"]["rows"],
        data_source=metadata["data"]["source"],
        confusion_matrix=evaluation["metrics"]["confusion_matrix"],
        classification_report=evaluation["metrics"]["classification_report"],
    )
    (output_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return LocalRun(output_dir=output_dir, metrics=metrics)
