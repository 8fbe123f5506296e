"""Model settings as pipeline parameters (plain strings and numbers) and back, for each model family.

Two families are tuned side by side: a random forest (100 trees, random_state 42 by default) and scikit-learn's
histogram gradient boosting. Which one serves a table is decided by cross-validation with a
noise-aware rule (components/tune/logic.py), not fixed here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from churnflow.core.errors import ChurnflowError

RANDOM_FOREST = "random_forest"
HIST_GRADIENT_BOOSTING = "hist_gradient_boosting"
FAMILIES = (RANDOM_FOREST, HIST_GRADIENT_BOOSTING)
MAX_FEATURES_NAMES = ("sqrt", "log2", "none")
CLASS_WEIGHTS = ("", "balanced", "balanced_subsample")
EARLY_STOPPING = ("auto", "true", "false")
SMALL_TABLE_ROWS = 50_000
"""Below this many rows gradient boosting fits on one OpenMP thread (see fit_threads)."""
ONE_THREAD_FOREST_ROWS = 2_000
"""Below this many rows a forest fits on one thread (forest_jobs)."""
LOOP_THREADS_ENV = "CHURNFLOW_LOOP_THREADS"
"""Cores for each task of a ParallelFor when tasks share one machine: kfp.local runs two loop
iterations at once, so `churnflow run` gives each half the cores. Unset on a cluster, where every pod
has its own CPU limit and uses all of it."""


class ForestParams(BaseModel):
    """The baseline script's forest (100 trees, random_state 42) as defaults, plus the knobs worth tuning.

    Pipeline parameters cannot be None, so `max_depth=0` means unlimited, `class_weight=""` means
    none and `max_features` is a string ("sqrt", "log2", "none", a fraction like "0.5" or a count).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Literal["random_forest"] = RANDOM_FOREST
    n_estimators: int = Field(100, ge=1, le=5000)
    max_depth: int = Field(0, ge=0)
    min_samples_leaf: int = Field(1, ge=1)
    max_features: str = "sqrt"
    class_weight: str = ""
    random_state: int = 42

    @field_validator("max_features")
    @classmethod
    def _max_features(cls, value: str) -> str:
        value = value.strip().lower()
        if value in MAX_FEATURES_NAMES:
            return value
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"expected one of {MAX_FEATURES_NAMES}, a fraction in (0, 1] or a count") from None
        if number <= 0 or (number > 1 and not number.is_integer()):
            raise ValueError("expected a fraction in (0, 1] or a whole count of features")
        return value

    @field_validator("class_weight")
    @classmethod
    def _class_weight(cls, value: str) -> str:
        value = value.strip()
        if value not in CLASS_WEIGHTS:
            raise ValueError(f"expected one of {[w for w in CLASS_WEIGHTS if w]} or empty")
        return value

    def sklearn_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for sklearn.ensemble.RandomForestClassifier."""
        max_features: Any = self.max_features
        if max_features == "none":
            max_features = None
        elif max_features not in MAX_FEATURES_NAMES:
            number = float(max_features)
            max_features = number if number <= 1 and "." in max_features else int(number)
        return {
            "n_estimators": self.n_estimators,
            "max_depth": self.max_depth or None,
            "min_samples_leaf": self.min_samples_leaf,
            "max_features": max_features,
            "class_weight": self.class_weight or None,
            "random_state": self.random_state,
        }


class BoostingParams(BaseModel):
    """scikit-learn's HistGradientBoostingClassifier with its own defaults, and the knobs worth tuning.

    `early_stopping` is a string because pipeline parameters are: "auto" (scikit-learn's default: on
    for more than 10,000 rows), "true" or "false"; it holds out `validation_fraction` of the rows it
    is given, never the test split.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Literal["hist_gradient_boosting"] = HIST_GRADIENT_BOOSTING
    learning_rate: float = Field(0.1, gt=0, le=1)
    max_iter: int = Field(100, ge=1, le=5000)
    max_leaf_nodes: int = Field(31, ge=2, le=4096)
    min_samples_leaf: int = Field(20, ge=1)
    l2_regularization: float = Field(0.0, ge=0)
    early_stopping: str = "auto"
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    random_state: int = 42

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _early_stopping(cls, value: Any) -> str:
        text = str(value).strip().lower()
        if text not in EARLY_STOPPING:
            raise ValueError(f"expected one of {EARLY_STOPPING}")
        return text

    def sklearn_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for sklearn.ensemble.HistGradientBoostingClassifier."""
        early: Any = {"auto": "auto", "true": True, "false": False}[self.early_stopping]
        return {
            "learning_rate": self.learning_rate,
            "max_iter": self.max_iter,
            "max_leaf_nodes": self.max_leaf_nodes,
            "min_samples_leaf": self.min_samples_leaf,
            "l2_regularization": self.l2_regularization,
            "early_stopping": early,
            "validation_fraction": self.validation_fraction,
            "random_state": self.random_state,
        }


ModelParams = ForestParams | BoostingParams
PARAMS_BY_FAMILY: dict[str, type[ForestParams] | type[BoostingParams]] = {
    RANDOM_FOREST: ForestParams,
    HIST_GRADIENT_BOOSTING: BoostingParams,
}


def _one_line(error: Exception) -> ChurnflowError | None:
    errors = getattr(error, "errors", lambda: [])()
    if not errors:
        return None
    first = errors[0]
    name = ".".join(map(str, first["loc"]))
    return ChurnflowError(f"hyperparameter {name}: {first['msg'].removeprefix('Value error, ')}")


def forest_params(**values: Any) -> ForestParams:
    """Builds ForestParams, turning a validation failure into one line that names the parameter."""
    try:
        return ForestParams(**values)
    except Exception as error:  # pydantic.ValidationError
        raise (_one_line(error) or error) from None


def model_params(**values: Any) -> ModelParams:
    """Builds the settings of the family named by `family` (default: the random forest), one-line errors."""
    family = values.get("family", RANDOM_FOREST)
    kind = PARAMS_BY_FAMILY.get(family)
    if kind is None:
        raise ChurnflowError(f"hyperparameter family: expected one of {', '.join(FAMILIES)}, got {family!r}")
    try:
        return kind(**values)
    except Exception as error:  # pydantic.ValidationError
        raise (_one_line(error) or error) from None


def build_estimator(params: ModelParams, n_jobs: int | None = -1) -> Any:
    """An unfitted scikit-learn classifier for these settings (forests fit on `n_jobs` cores;
    boosting uses every core through OpenMP)."""
    if isinstance(params, BoostingParams):
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(**params.sklearn_kwargs())
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(**params.sklearn_kwargs(), n_jobs=n_jobs)


def forest_jobs(rows: int) -> int:
    """n_jobs for a forest fitted on `rows` rows in a task of its own: every core, except on a small
    table, where a tree takes well under a millisecond to grow and scikit-learn's per-tree Python code
    (which holds the GIL) is most of the work, so a second thread only adds hand-offs. Five-fold
    out-of-fold predictions of 100 trees on 800 rows took 0.97 s on two threads and 0.64 s on one;
    at 3,000 rows two threads were ahead. The trees are the same either way (each has its own seed)."""
    return 1 if rows < ONE_THREAD_FOREST_ROWS else -1


def loop_threads() -> int | None:
    """This task's share of the cores when it runs beside other loop tasks (LOOP_THREADS_ENV), else None."""
    import os

    text = os.environ.get(LOOP_THREADS_ENV, "").strip()
    return max(1, int(text)) if text.isdigit() else None


@contextmanager
def fit_threads(params: ModelParams, rows: int, threads: int | None = None) -> Iterator[None]:
    """The threads a fit of `rows` rows may use: `threads` when the task shares the machine (both
    families: forests take it as n_jobs from build_estimator, boosting as its OpenMP threads), and
    for gradient boosting one on small tables, all otherwise.

    HistGradientBoosting synchronises its threads at every split of every tree; on a small table that
    costs more than the work it shares, and on a busy machine (a pipeline's parallel tasks, a CI run)
    spinning threads slow every fit several-fold: two loop tasks each spinning two OpenMP threads on
    two cores took 111 s for a 3 s cross-validation."""
    limit = 1 if isinstance(params, BoostingParams) and rows < SMALL_TABLE_ROWS else threads
    if limit is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=limit, user_api="openmp"):
        yield
