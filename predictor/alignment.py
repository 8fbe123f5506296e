"""Aligning requests to the training columns, fast.

The reference semantics are `FeatureContract.encode_frame` (pandas: `get_dummies` keeping every
level, reindexed to the training columns). Building a DataFrame per request costs many times the
rest of the request, so this module does the same thing with a preallocated numpy row and
dictionary look-ups; tests check the two agree on thousands of random rows, including unseen
levels, blanks and extra columns.

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
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from churnflow.contract import FeatureContract, normalize_level
from churnflow.errors import ChurnflowError

_ABSENT = object()
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class RequestError(ChurnflowError):
    """A request that cannot be scored; the message names the field. Served as HTTP 400."""


@dataclass
class Aligned:
    """A batch ready for the model, plus what alignment noticed on the way."""

    features: np.ndarray
    """rows × feature_columns, float64"""
    levels: dict[str, list[str | None]]
    """each categorical column's normalized level per row (None: missing), for drift counting"""
    unseen: Counter = field(default_factory=Counter)
    missing: Counter = field(default_factory=Counter)
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
        self.width = len(contract.feature_columns)
        self.fill = [contract.numeric_fill[c] for c in self.numeric]
        position = {name: i for i, name in enumerate(contract.feature_columns)}
        self.level_position = {
            column: {level: position[contract.one_hot_column(column, level)] for level in levels}
            for column, levels in contract.categorical.items()
        }
        self.strict = contract.strict_categories

    # -- scalar readers ---------------------------------------------------------------------------

    def _number(self, value: Any, where: str, column: str, strings: bool, index: int) -> float:
        if value is None:
            return self.fill[index]
        if isinstance(value, bool) or not isinstance(value, int | float | np.number | str):
            raise RequestError(f"{where}field {column!r}: expected a number, got {type(value).__name__}")
        if isinstance(value, str):
            text = value.strip()
            if not text:  # blank, as a CSV cell or a form field sends it: the training median, on every route
                return self.fill[index]
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
        if not math.isfinite(number):
            raise RequestError(f"{where}field {column!r}: expected a finite number, got {number}")
        if abs(number) > _FLOAT32_MAX:  # the forest compares float32: it would read this as infinity
            raise RequestError(f"{where}field {column!r}: number out of range, got {number:g} (limit ±3.4e38)")
        return number

    def _level(self, value: Any, where: str, column: str) -> str | None:
        if value is None or isinstance(value, str | int | float | bool | np.generic):
            level = normalize_level(value)
            if isinstance(value, float) and not math.isfinite(value) and level is not None:
                raise RequestError(f"{where}field {column!r}: expected a category, got {value}")
            return level
        raise RequestError(f"{where}field {column!r}: expected a string category, got {type(value).__name__}")

    def _place_level(self, out: Aligned, row: int, column: str, level: str | None, where: str) -> None:
        out.levels[column].append(level)
        if level is None:
            if self.strict:
                raise RequestError(f"{where}missing required field {column!r}")
            out.missing[column] += 1
            return
        position = self.level_position[column].get(level)
        if position is None:
            if self.strict:
                expected = ", ".join(self.contract.categorical[column])
                raise RequestError(f"{where}field {column!r}: unseen category {level!r} (expected one of: {expected})")
            out.unseen[column] += 1
            return
        out.features[row, position] = 1.0

    # -- batch encoders ---------------------------------------------------------------------------

    def _empty(self, rows: int) -> Aligned:
        return Aligned(features=np.zeros((rows, self.width)), levels={c: [] for c in self.categorical})

    def encode_records(self, records: list[Any], label: str = "instances", numeric_strings: bool = False) -> Aligned:
        """Encodes v1 instances: each a dict keyed by column, or a list in contract column order."""
        out = self._empty(len(records))
        features = out.features
        n_numeric = len(self.numeric)
        expected = len(self.input_columns)
        for row, record in enumerate(records):
            where = f"{label}[{row}]: "
            if isinstance(record, dict):
                for j, column in enumerate(self.numeric):
                    value = record.get(column, _ABSENT)
                    if value is _ABSENT:
                        raise RequestError(f"{where}missing required field {column!r}")
                    features[row, j] = self._number(value, where, column, numeric_strings, j)
                for column in self.categorical:
                    level = self._level(record.get(column), where, column)
                    self._place_level(out, row, column, level, where)
                if len(record) > expected or any(key not in self.known for key in record):
                    out.extra_fields += sum(1 for key in record if key not in self.known)
            elif isinstance(record, list | tuple):
                if len(record) != expected:
                    raise RequestError(
                        f"{where}expected {expected} values in column order ({', '.join(self.input_columns)}), "
                        f"got {len(record)}"
                    )
                for j in range(n_numeric):
                    features[row, j] = self._number(record[j], where, self.numeric[j], numeric_strings, j)
                for k, column in enumerate(self.categorical):
                    level = self._level(record[n_numeric + k], where, column)
                    self._place_level(out, row, column, level, where)
            else:
                raise RequestError(
                    f"{where}expected an object keyed by column name or a list of {expected} values, "
                    f"got {type(record).__name__}"
                )
        return out

    def encode_columns(self, columns: dict[str, list[Any]], rows: int, label: str = "inputs") -> Aligned:
        """Encodes column-oriented data (v2 named inputs): column name → one value per row."""
        out = self._empty(rows)
        for j, column in enumerate(self.numeric):
            values = columns.get(column)
            if values is None:
                raise RequestError(f"{label}: missing required input {column!r}")
            for row, value in enumerate(values):
                out.features[row, j] = self._number(value, f"{label}[{column!r}][{row}]: ", column, False, j)
        for column in self.categorical:
            values = columns.get(column)
            for row in range(rows):
                where = f"{label}[{column!r}][{row}]: "
                level = None if values is None else self._level(values[row], where, column)
                self._place_level(out, row, column, level, where if values is not None else f"{label}: ")
        out.extra_fields = sum(1 for name in columns if name not in self.known)
        return out
