"""The dataset config: which columns of the customer table are what.

Written by the user once per table (YAML or JSON) and parsed into a strict model: unknown keys,
duplicate columns or a target listed as a feature are errors that name the offending key.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from churnflow.core.errors import ChurnflowError

CONFIG_KEYS = (
    "id",
    "target",
    "positive_label",
    "numeric",
    "categorical",
    "strict_categories",
    "value",
    "segments",
    "actionable",
)
VALUE_KEYS = ("column", "horizon_months", "constant")


class ValueConfig(BaseModel):
    """What a customer is worth, for value at risk: a column times a horizon, or one constant.

    `value_at_risk = probability × value × horizon_months` where value is the column's number for the
    row (for example monthly charges) or the constant for every customer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str | None = None
    """Numeric column holding each customer's value per month (read from the scored table)."""
    horizon_months: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    """How many months of that value a churned customer takes with them."""
    constant: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """One value per customer for everyone, instead of a column."""

    @field_validator("column")
    @classmethod
    def _column_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a non-empty column name")
        return value

    @model_validator(mode="after")
    def _column_or_constant(self) -> ValueConfig:
        if (self.column is None) == (self.constant is None):
            raise ValueError("give exactly one of column (with horizon_months) or constant")
        return self


class DatasetConfig(BaseModel):
    """Column roles of one customer table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = None
    """Customer id column: kept for joining ground truth later, never used as a feature."""
    target: str
    """Column holding the churn outcome."""
    positive_label: str | int | bool = 1
    """Value of `target` that means "churned" (1, Yes, true, ...); any other single value means stayed."""
    numeric: list[str] = []
    categorical: list[str] = []
    strict_categories: bool = False
    """When true, a category level unseen in training is rejected at predict time instead of read as
    all-zero one-hot columns."""
    value: ValueConfig | None = None
    """Customer value for `churnflow score`'s value at risk; without it every customer is worth 1."""
    segments: list[str] = []
    """Columns `churnflow plan` copies into the call list (region, plan type, ...): for the callers and
    for measuring a campaign by segment; any column of the customer table."""
    actionable: list[str] | None = None
    """Features a caller can act on (contract, support, ...): when set, only these become the call
    list's reasons; tenure or total charges explain the risk but give a caller nothing to offer."""

    @field_validator("target", "id")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a non-empty column name")
        return value

    @model_validator(mode="after")
    def _columns_are_consistent(self) -> DatasetConfig:
        features = self.numeric + self.categorical
        if not features:
            raise ValueError("numeric and categorical are both empty: at least one feature is needed")
        duplicates = sorted({c for c in features if features.count(c) > 1})
        if duplicates:
            raise ValueError(f"columns listed twice among the features: {duplicates}")
        for role, column in (("target", self.target), ("id", self.id)):
            if column is not None and column in features:
                raise ValueError(f"{role} column {column!r} is also listed as a feature")
        outside = [c for c in self.actionable or [] if c not in features]
        if outside:
            raise ValueError(f"actionable columns must be features (numeric or categorical): {outside}")
        if self.value is not None and self.value.column is not None and self.value.column in (self.target, self.id):
            raise ValueError(f"value column {self.value.column!r} is the target or id column")
        return self

    @property
    def features(self) -> list[str]:
        return self.numeric + self.categorical

    @property
    def required_columns(self) -> list[str]:
        return ([self.id] if self.id else []) + [self.target] + self.features


def _one_line(error: ValidationError, source: str) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            keys = VALUE_KEYS if item["loc"][0] == "value" and len(item["loc"]) > 1 else CONFIG_KEYS
            parts.append(f"unknown key {location!r} (expected one of: {', '.join(keys)})")
        elif item["type"] == "missing":
            parts.append(f"missing required key {location!r}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            parts.append(f"{location}: {message}" if item["loc"] else message)
    return f"dataset config {source}: " + "; ".join(parts)


def parse_config(data: Any, source: str = "(inline)") -> DatasetConfig:
    """Validates an already-parsed mapping into a DatasetConfig."""
    if not isinstance(data, dict):
        raise ChurnflowError(f"dataset config {source}: expected a mapping of keys {CONFIG_KEYS}")
    try:
        return DatasetConfig.model_validate(data)
    except ValidationError as error:
        raise ChurnflowError(_one_line(error, source)) from None


def parse_config_text(text: str, source: str = "(inline)") -> DatasetConfig:
    """Parses YAML or JSON text (JSON is YAML) into a DatasetConfig."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "not valid YAML or JSON"
        raise ChurnflowError(f"dataset config {source}: {problem}{where}") from None
    return parse_config(data, source)


def load_config(path: str | Path | None) -> DatasetConfig:
    """Reads a dataset config file; None means the packaged default (the five-column classic table:
    tenure, usage, age, monthly_charges, contract_type)."""
    if path is None:
        text = resources.files("churnflow").joinpath("configs/default.yaml").read_text()
        return parse_config_text(text, "default.yaml")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ChurnflowError(f"dataset config {path}: cannot read it ({error.strerror})") from None
    except UnicodeDecodeError:
        raise ChurnflowError(f"dataset config {path}: not UTF-8 text") from None
    return parse_config_text(text, str(path))


def config_to_json(config: DatasetConfig) -> str:
    """The compact JSON form passed to the pipeline as a parameter (an unset value section is left out)."""
    data = config.model_dump()
    if data.get("value") is None:
        data.pop("value", None)
    for key, empty in (("segments", []), ("actionable", None)):  # unset: left out, as before they existed
        if data.get(key) == empty:
            data.pop(key, None)
    return json.dumps(data, sort_keys=True)
