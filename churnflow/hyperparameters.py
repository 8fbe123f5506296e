"""RandomForest hyperparameters as pipeline parameters (plain strings and numbers) and back."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from churnflow.errors import ChurnflowError

MAX_FEATURES_NAMES = ("sqrt", "log2", "none")
CLASS_WEIGHTS = ("", "balanced", "balanced_subsample")


class ForestParams(BaseModel):
    """The original design's defaults (100 trees, random_state 42) plus the knobs worth tuning.

    Pipeline parameters cannot be None, so `max_depth=0` means unlimited, `class_weight=""` means
    none and `max_features` is a string ("sqrt", "log2", "none", a fraction like "0.5" or a count).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

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


def forest_params(**values: Any) -> ForestParams:
    """Builds ForestParams, turning a validation failure into one line that names the parameter."""
    try:
        return ForestParams(**values)
    except Exception as error:  # pydantic.ValidationError
        errors = getattr(error, "errors", lambda: [])()
        if not errors:
            raise
        first = errors[0]
        name = ".".join(map(str, first["loc"]))
        raise ChurnflowError(f"hyperparameter {name}: {first['msg'].removeprefix('Value error, ')}") from None
