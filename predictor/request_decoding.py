"""Reading requests into columns for the one encoder (churnflow/core/encoding.py).

This module only validates: each value is checked where the request put it, so a bad one is a 400
naming the row and field, then the columns go to `ColumnEncoder`, which training and bulk scoring
call too. Tests check the result against pandas `get_dummies` on thousands of random rows, including
unseen levels, blanks and extra columns.

What a request may contain, per feature:
- numeric: a JSON number; null, "" or whitespace means blank and takes the training median; anything
  else is a 400.
- categorical: a string (numbers and booleans are read as their text, as in training); null or an
  absent field reads as all-zero one-hot columns, and so does a level unseen in training, unless
  the contract is strict, where both are a 400.
- fields not in the contract are ignored and counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from churnflow.core.contract import FeatureContract, normalize_level
from churnflow.core.encoding import FLOAT32_MAX, CategoryRefused, ColumnEncoder, Encoded, Levels, number_problem
from churnflow.core.errors import ChurnflowError

_ABSENT = object()


class RequestError(ChurnflowError):
    """A request that cannot be scored; the message names the field. Served as HTTP 400."""


@dataclass
class Aligned:
    """A batch ready for the model, plus what alignment noticed on the way."""

    features: np.ndarray
    """rows × feature_columns, float64"""
    levels: dict[str, list[str | None]]
    """each categorical column's normalized level per row (None: missing), for drift counting"""
    unseen: dict[str, int] = field(default_factory=dict)
    """categorical column → rows with a level unseen in training (only columns that had some)"""
    missing: dict[str, int] = field(default_factory=dict)
    """categorical column → rows without a level (only columns that had some)"""
    extra_fields: int = 0

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])


class Aligner:
    """Encodes instances (dicts by column name, or lists in contract order) into the model matrix."""

    def __init__(self, contract: FeatureContract) -> None:
        self.contract = contract
        self.numeric = list(contract.numeric)
        self.categorical = list(contract.categorical)
        self.input_columns = contract.input_columns
        self.known = set(self.input_columns)
        self.strict = contract.strict_categories
        self.encoder = ColumnEncoder(contract)

    # -- scalar readers ---------------------------------------------------------------------------

    def _number(self, value: Any, where: str, column: str, strings: bool, index: int) -> float:
        """The value as a float; NaN for blank (the encoder reads it as the training median)."""
        if value is None:
            return math.nan
        if isinstance(value, bool) or not isinstance(value, int | float | np.number | str):
            raise RequestError(f"{where}field {column!r}: expected a number, got {type(value).__name__}")
        if isinstance(value, str):
            text = value.strip()
            if not text:  # blank, as a CSV cell or a form field sends it: the training median, on every route
                return math.nan
            if not strings:
                raise RequestError(f"{where}field {column!r}: expected a number, got a string {value[:40]!r}")
            try:
                value = float(text)
            except ValueError:
                raise RequestError(f"{where}field {column!r}: expected a number, got {value[:40]!r}") from None
        try:
            number = float(value)
        except OverflowError:
            raise RequestError(f"{where}field {column!r}: number out of range") from None
        if -FLOAT32_MAX <= number <= FLOAT32_MAX:  # finite and readable by the compiled forest
            return number
        raise RequestError(f"{where}field {column!r}: {number_problem(number)}")

    def _level(self, value: Any, where: str, column: str) -> str | None:
        if value is None or isinstance(value, str | int | float | bool | np.generic):
            level = normalize_level(value)
            if isinstance(value, float) and not math.isfinite(value) and level is not None:
                raise RequestError(f"{where}field {column!r}: expected a category, got {value}")
            return level
        raise RequestError(f"{where}field {column!r}: expected a string category, got {type(value).__name__}")

    def _encode(
        self, numbers: list[float], rows: int, levels: dict[str, list[str | None]], where: Callable[[int, str], str]
    ) -> Aligned:
        """Hands the validated columns to the one encoder; a strict refusal becomes a 400 at its row."""
        categorical = {column: Levels.from_values(values) for column, values in levels.items()}
        matrix = np.array(numbers, dtype=np.float64).reshape(rows, len(self.numeric))
        try:
            encoded: Encoded = self.encoder.encode(
                matrix, categorical, blanks=rows > 8 or any(map(math.isnan, numbers))
            )
        except CategoryRefused as refused:
            raise RequestError(refused.describe(where(refused.row, refused.column))) from None
        return Aligned(features=encoded.features, levels=levels, unseen=encoded.unseen, missing=encoded.missing)

    # -- adapters: records and columns ------------------------------------------------------------

    def encode_records(self, records: list[Any], label: str = "instances", numeric_strings: bool = False) -> Aligned:
        """Encodes v1 instances: each a dict keyed by column, or a list in contract column order."""
        numeric, categorical = self.numeric, self.categorical
        numbers: list[float] = []
        levels: dict[str, list[str | None]] = {column: [] for column in categorical}
        n_numeric = len(numeric)
        expected = len(self.input_columns)
        extra = 0
        for row, record in enumerate(records):
            where = f"{label}[{row}]: "
            if isinstance(record, dict):
                for j, column in enumerate(numeric):
                    value = record.get(column, _ABSENT)
                    if value is _ABSENT:
                        raise RequestError(f"{where}missing required field {column!r}")
                    numbers.append(self._number(value, where, column, numeric_strings, j))
                for column in categorical:
                    level = self._level(record.get(column), where, column)
                    levels[column].append(level)
                if len(record) > expected or any(key not in self.known for key in record):
                    extra += sum(1 for key in record if key not in self.known)
            elif isinstance(record, list | tuple):
                if len(record) != expected:
                    raise RequestError(
                        f"{where}expected {expected} values in column order ({', '.join(self.input_columns)}), "
                        f"got {len(record)}"
                    )
                for j in range(n_numeric):
                    numbers.append(self._number(record[j], where, numeric[j], numeric_strings, j))
                for k, column in enumerate(categorical):
                    level = self._level(record[n_numeric + k], where, column)
                    levels[column].append(level)
            else:
                raise RequestError(
                    f"{where}expected an object keyed by column name or a list of {expected} values, "
                    f"got {type(record).__name__}"
                )
        aligned = self._encode(numbers, len(records), levels, lambda row, _: f"{label}[{row}]: ")
        aligned.extra_fields = extra
        return aligned

    def encode_columns(self, columns: dict[str, list[Any]], rows: int, label: str = "inputs") -> Aligned:
        """Encodes column-oriented data (v2 named inputs): column name → one value per row."""
        width = len(self.numeric)
        numbers = [0.0] * (rows * width)
        for j, column in enumerate(self.numeric):
            values = columns.get(column)
            if values is None:
                raise RequestError(f"{label}: missing required input {column!r}")
            for row, value in enumerate(values):
                numbers[row * width + j] = self._number(value, f"{label}[{column!r}][{row}]: ", column, False, j)
        levels: dict[str, list[str | None]] = {}
        for column in self.categorical:
            values = columns.get(column)
            column_levels: list[str | None] = []
            for row in range(rows):
                where = f"{label}[{column!r}][{row}]: "
                level = None if values is None else self._level(values[row], where, column)
                column_levels.append(level)
            levels[column] = column_levels
        aligned = self._encode(
            numbers,
            rows,
            levels,
            lambda row, column: f"{label}[{column!r}][{row}]: " if column in columns else f"{label}: ",
        )
        aligned.extra_fields = sum(1 for name in columns if name not in self.known)
        return aligned
