"""The one encoding: raw feature columns → the model matrix, for training, serving and bulk scoring.

Every route hands this module columns, never rows: numeric columns as float64 (NaN where the cell
was blank) and categorical columns as normalised levels, factorised (an integer code per row into a
small list of distinct levels). Encoding is then a few numpy operations per column, whatever the
batch size: blanks take the training median, each distinct level is looked up once and broadcast to
its rows as a one-hot position. A level unseen in training, or no level at all, reads as all-zero
one-hot columns, or is refused when the contract is strict.

Adapters (this module's `encode_frame` for pandas, `churnflow.predictor.request_decoding` for v1 records
and v2 tensors, `churnflow.scoring.arrow_encoding` for pyarrow batches) validate values and say where a bad one
was; they never encode on their own. The semantics are those of pandas `get_dummies` keeping every
level, reindexed to the training columns; a test keeps pandas as the oracle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from churnflow.core.contract import FeatureContract, normalize_level
from churnflow.core.errors import ChurnflowError

FLOAT32_MAX = float(np.finfo(np.float32).max)
"""The largest magnitude the compiled forest (float32 thresholds) reads without overflowing."""
BLANK_TEXTS = frozenset({"", "nan", "na", "null", "none"})
"""Text cells read as blank, as the training table reader reads them (case-insensitive, trimmed)."""

_MISSING = -1
_UNSEEN = -2
_FIRST = np.zeros(1, dtype=np.intp)
_FIRST.flags.writeable = False


class Levels(NamedTuple):
    """One categorical column, factorised: `uniques[codes[row]]` is the row's normalised level."""

    codes: np.ndarray
    uniques: Sequence[str | None]

    @classmethod
    def from_values(cls, levels: Sequence[str | None]) -> Levels:
        """Factorises already-normalised levels (a short Python loop: serving batches are small)."""
        if len(levels) == 1:  # a one-row request: no factorising to do
            return cls(_FIRST, levels)
        index: dict[str | None, int] = {}
        codes = [index.setdefault(level, len(index)) for level in levels]
        return cls(np.asarray(codes, dtype=np.intp), list(index))


class Encoded(NamedTuple):
    """The model matrix plus what encoding noticed on the way (for metrics and reports)."""

    features: np.ndarray
    """rows × feature_columns, float64"""
    unseen: dict[str, int]
    """column → rows whose level was unseen in training (all-zero one-hot); only columns that had some"""
    missing: dict[str, int]
    """column → rows with no level (all-zero one-hot); only columns that had some"""
    refused: dict[str, np.ndarray] | None = None
    """with report_refused: column → mask of rows a strict contract refused (their one-hot is all zero)"""


class CategoryRefused(ChurnflowError):
    """A strict contract met an unseen or missing level; the adapter says where (row and column)."""

    def __init__(self, column: str, row: int, level: str | None, expected: list[str]) -> None:
        self.column, self.row, self.level, self.expected = column, row, level, expected
        super().__init__(self.describe())

    def describe(self, where: str = "") -> str:
        if self.level is None:
            return f"{where}missing required field {self.column!r}"
        expected = ", ".join(self.expected)
        return f"{where}field {self.column!r}: unseen category {self.level!r} (expected one of: {expected})"


def number_problem(number: float) -> str | None:
    """Why a parsed (non-blank) number cannot be scored, or None when it can."""
    if -FLOAT32_MAX <= number <= FLOAT32_MAX:  # one comparison; False for NaN and infinities too
        return None
    if not math.isfinite(number):
        return f"expected a finite number, got {number}"
    return "number out of range"


class ColumnEncoder:
    """Encodes columns into the model matrix for one feature contract."""

    def __init__(self, contract: FeatureContract) -> None:
        self.contract = contract
        self.numeric = list(contract.numeric)
        self.categorical = list(contract.categorical)
        self.width = len(contract.feature_columns)
        self.fill = np.array([contract.numeric_fill[c] for c in self.numeric], dtype=np.float64)
        if contract.feature_columns[: len(self.numeric)] != self.numeric:
            raise ChurnflowError("feature contract: the model's columns must start with the numeric columns in order")
        position = {name: i for i, name in enumerate(contract.feature_columns)}
        self.positions = {
            column: {level: position[contract.one_hot_column(column, level)] for level in levels}
            for column, levels in contract.categorical.items()
        }
        self.strict = contract.strict_categories

    def encode(
        self,
        numeric: np.ndarray,
        categorical: dict[str, Levels],
        refuse_missing: bool | None = None,
        blanks: bool = True,
        report_refused: bool = False,
    ) -> Encoded:
        """`numeric`: rows × numeric columns in contract order, NaN for blank; `categorical`: column →
        Levels (an absent column is missing on every row). A strict contract refuses unseen levels,
        and missing ones too unless `refuse_missing` is False (training tables may have blanks).
        `blanks=False` says the caller saw no blank number (saves a scan on one-row requests).
        `report_refused=True` marks refused rows in `Encoded.refused` instead of raising (bulk scoring
        sends them to its rejects file and scores the rest)."""
        rows = numeric.shape[0]
        features = np.zeros((rows, self.width))
        block = features[:, : len(self.numeric)]
        block[...] = numeric
        if blanks:
            blank = np.isnan(block)
            if np.count_nonzero(blank):  # count_nonzero: on a small batch .any() costs several times more
                np.copyto(block, np.broadcast_to(self.fill, block.shape), where=blank)
        out = Encoded(features, {}, {}, {} if report_refused else None)
        if refuse_missing is None:
            refuse_missing = self.strict
        for column, positions in self.positions.items():
            levels = categorical.get(column)
            if levels is None:
                levels = Levels(np.zeros(rows, dtype=np.intp), [None])
            lookup = [_MISSING if u is None else positions.get(u, _UNSEEN) for u in levels.uniques]
            if len(lookup) == 1 and lookup[0] >= 0:  # one known level for the whole batch
                features[:, lookup[0]] = 1.0
                continue
            place = np.array(lookup or [_MISSING], dtype=np.intp)[levels.codes]
            found = place >= 0
            features[np.flatnonzero(found), place[found]] = 1.0
            unseen = np.count_nonzero(place == _UNSEEN)
            missing = rows - unseen - np.count_nonzero(found)
            if (self.strict and unseen) or (refuse_missing and missing):
                refused = (place == _UNSEEN) if self.strict else np.zeros(rows, dtype=bool)
                if refuse_missing:
                    refused |= place == _MISSING
                if out.refused is not None:
                    out.refused[column] = refused
                    continue
                row = int(np.flatnonzero(refused)[0])
                raise CategoryRefused(column, row, levels.uniques[levels.codes[row]], self.contract.categorical[column])
            if unseen:
                out.unseen[column] = int(unseen)
            if missing:
                out.missing[column] = int(missing)
        return out


# -- the pandas adapter (training and evaluation tables, already typed by validate_table) ----------


def encode_frame(encoder: ColumnEncoder, frame: Any) -> np.ndarray:
    """A typed pandas frame → the model matrix; extra columns are ignored.

    Numeric columns must already be numbers (validate_table made them so); blanks are NaN. Missing
    categorical cells are allowed (all-zero) even on a strict contract: a training table may have them.
    """
    import pandas as pd

    missing = [c for c in encoder.numeric if c not in frame.columns]
    if missing:
        raise ChurnflowError(f"missing required numeric column(s): {', '.join(missing)}")
    numeric = np.empty((len(frame), len(encoder.numeric)))
    for j, column in enumerate(encoder.numeric):
        numeric[:, j] = pd.to_numeric(frame[column], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    categorical = {}
    for column in encoder.categorical:
        if column not in frame.columns:
            continue
        codes, uniques = pd.factorize(frame[column].map(normalize_level), use_na_sentinel=True)
        uniques = list(uniques) + [None]
        codes = np.where(codes < 0, len(uniques) - 1, codes).astype(np.intp)
        categorical[column] = Levels(codes, uniques)
    try:
        return encoder.encode(numeric, categorical, refuse_missing=False).features
    except CategoryRefused as refused:
        raise ChurnflowError(refused.describe()) from None


def encode_contract_frame(contract: FeatureContract, frame: Any) -> np.ndarray:
    """Turns a typed feature frame into the model matrix exactly as serving does.

    Numeric blanks take the training median; a level unseen in training becomes all zeros (or an
    error when the contract is strict). Extra columns are ignored. It lives here, not on the contract,
    because encoding builds on the contract: the contract knows nothing of encoders."""
    return encode_frame(ColumnEncoder(contract), frame)
