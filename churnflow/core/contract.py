"""The feature contract: the single description of what the model reads.

Preprocessing builds it from the dataset config and the training split; it is saved as
`contract.json` inside the model artifact, and the predictor reads it back from there. Nothing else
in the project restates column names, types, category levels or the one-hot column order.

Encoding itself lives in churnflow/core/encoding.py, the one implementation every route calls.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from churnflow.core.errors import ChurnflowError

CONTRACT_FILE = "contract.json"
ONE_HOT_SEPARATOR = "_"


def normalize_level(value: Any) -> str | None:
    """The string form a categorical value takes in training and serving alike.

    Integral floats read from a CSV column with blanks (2.0) and JSON integers (2) both become "2";
    None, NaN and blank strings are missing.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        if float(value).is_integer():
            return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    text = str(value).strip()
    return text or None


def label_key(value: Any) -> str | None:
    """A target label's comparable form: numbers by value ("1", "1.0", 1 → "1"), text case-insensitively."""
    level = normalize_level(value)
    if level is None:
        return None
    try:
        number = float(level)
    except ValueError:
        return level.lower()
    return str(int(number)) if number.is_integer() else str(number)


def label_matches(value: Any, positive_label: Any) -> bool:
    """Whether a target value equals the configured positive label (1 == "1" == 1.0, "Yes" == "yes")."""
    left = label_key(value)
    return left is not None and left == label_key(positive_label)


class FeatureContract(BaseModel):
    """Columns, types, category levels and target of one trained model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = 1
    id: str | None
    target: str
    positive_label: str
    numeric: list[str]
    numeric_dtypes: dict[str, str]
    """pandas dtype of each numeric column in training ("int64" or "float64")."""
    numeric_fill: dict[str, float]
    """Training median of each numeric column: what a blank (null) value is read as."""
    categorical: dict[str, list[str]]
    """Each categorical column with its training levels, sorted as pandas sorts them."""
    strict_categories: bool
    feature_columns: list[str]
    """Model input columns in training order: numerics, then one-hot columns `<column>_<level>`."""
    threshold: float = 0.5
    """Churn is predicted when the (calibrated) probability is above this; chosen by the train step."""

    @property
    def input_columns(self) -> list[str]:
        """The columns a caller sends, in contract order (numerics first, then categoricals)."""
        return self.numeric + list(self.categorical)

    def one_hot_column(self, column: str, level: str) -> str:
        return f"{column}{ONE_HOT_SEPARATOR}{level}"

    # -- building ---------------------------------------------------------------------------------

    @classmethod
    def from_training_frame(
        cls, frame: pd.DataFrame, config: Any, integral_columns: tuple[str, ...] = ()
    ) -> FeatureContract:
        """Derives the contract from the (already validated and typed) training split."""
        numeric_dtypes = {c: "int64" if c in integral_columns else "float64" for c in config.numeric}
        fill = {}
        for column in config.numeric:
            median = frame[column].median()
            fill[column] = float(median) if not pd.isna(median) else 0.0
        categorical = {}
        for column in config.categorical:
            levels = {normalize_level(v) for v in frame[column].unique()}
            categorical[column] = sorted(level for level in levels if level is not None)
        feature_columns = list(config.numeric) + [
            f"{column}{ONE_HOT_SEPARATOR}{level}" for column, levels in categorical.items() for level in levels
        ]
        return cls(
            id=config.id,
            target=config.target,
            positive_label=normalize_level(config.positive_label) or "1",
            numeric=list(config.numeric),
            numeric_dtypes=numeric_dtypes,
            numeric_fill=fill,
            categorical=categorical,
            strict_categories=config.strict_categories,
            feature_columns=feature_columns,
        )

    # -- persistence ----------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONTRACT_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> FeatureContract:
        path = Path(directory) / CONTRACT_FILE
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except FileNotFoundError:
            raise ChurnflowError(f"model directory {directory}: no {CONTRACT_FILE}") from None
        except (ValueError, TypeError) as error:
            raise ChurnflowError(f"{path}: not a valid feature contract ({error})") from None
