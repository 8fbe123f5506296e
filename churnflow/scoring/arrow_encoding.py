"""The pyarrow adapter of the one encoder: a batch of the customer table → model matrix + rejects.

Values are checked column by column with Arrow compute kernels (no Python loop over rows), with the
rules serving and training apply: a blank number ("", whitespace, null, NaN, or the text nan / na /
null / none) is read as the training median; text that is not a number, an infinite number or one
beyond float32's range is a reject; categorical cells are normalised like every other route (one
look-up per distinct value, not per row), and a formula-like cell (=, @, +x, -x) is a reject. Unseen
or missing levels read as all-zero one-hot columns, or are rejects on a strict contract.

A rejected row is never scored; the caller writes it with its field and reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from churnflow.core.contract import FeatureContract, normalize_level
from churnflow.core.data import FORMULA_LIKE
from churnflow.core.encoding import BLANK_TEXTS, FLOAT32_MAX, CategoryRefused, ColumnEncoder, Levels
from churnflow.core.errors import ChurnflowError

# What Arrow's string → double cast accepts; used only when a column has some non-numeric text.
NUMBER_PATTERN = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$|^(?i:[+-]?(?:inf|infinity))$"
_BLANKS = pa.array(sorted(BLANK_TEXTS))


@dataclass
class Problems:
    """Per row of one batch: the first field that could not be read, and why."""

    rows: int
    bad: np.ndarray = field(init=False)
    reasons: dict[int, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bad = np.zeros(self.rows, dtype=bool)

    def add(self, column: str, mask: np.ndarray, reason_of: callable) -> None:
        """Marks `mask` rows bad; reasons are built only for rows not already bad (few, normally)."""
        new = mask & ~self.bad
        for row in np.flatnonzero(new):
            self.reasons[int(row)] = (column, reason_of(int(row)))
        self.bad |= mask


@dataclass
class EncodedBatch:
    features: np.ndarray
    """the good rows only, in batch order"""
    good: np.ndarray
    """mask over the batch: rows that were scored"""
    rejects: dict[int, tuple[str, str]]
    """batch row → (field, reason)"""
    value: np.ndarray | None
    """the value column's number for good rows, when the config names one"""
    unseen: dict[str, int]
    missing: dict[str, int]
    filled: dict[str, int] | None = None
    """numeric column → blank cells among the good rows, read as the training median"""


def _text(value: object, limit: int = 40) -> str:
    return repr(value[:limit] if isinstance(value, str) else value)


def read_numbers(array: pa.Array, column: str, problems: Problems) -> np.ndarray:
    """float64 with NaN for blank cells; unreadable cells are marked in `problems` (and read as NaN)."""
    kind = array.type
    if pa.types.is_dictionary(kind):
        array, kind = array.cast(kind.value_type), kind.value_type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        values = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        trimmed = pc.utf8_trim_whitespace(array)
        blank = pc.fill_null(pc.is_in(pc.utf8_lower(trimmed), value_set=_BLANKS), True)
        candidates = pc.if_else(blank, pa.scalar(None, trimmed.type), trimmed)
        try:
            parsed = pc.cast(candidates, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            readable = pc.fill_null(pc.match_substring_regex(candidates, NUMBER_PATTERN), False)
            parsed = pc.cast(pc.if_else(readable, candidates, pa.scalar(None, trimmed.type)), pa.float64())
            unreadable = ~readable.to_numpy(zero_copy_only=False) & ~blank.to_numpy(zero_copy_only=False)
            problems.add(column, unreadable, lambda row: f"expected a number, got {_text(array[row].as_py())}")
        values = parsed.to_numpy(zero_copy_only=False)
    elif pa.types.is_null(kind):
        values = np.full(len(array), np.nan)
    else:
        raise ChurnflowError(f"column {column!r}: expected numbers, got values of type {kind}")
    values = np.array(values, dtype=np.float64)  # a writable copy
    out_of_range = ~np.isnan(values) & ~(np.abs(values) <= FLOAT32_MAX)
    if out_of_range.any():

        def reason(row: int) -> str:
            number = values[row]
            return f"expected a finite number, got {number}" if np.isinf(number) else "number out of range"

        problems.add(column, out_of_range, reason)
        values[out_of_range] = np.nan
    return values


def read_levels(array: pa.Array, column: str, problems: Problems) -> Levels:
    """Normalised levels, factorised by Arrow: each distinct value is normalised once."""
    kind = array.type
    if pa.types.is_dictionary(kind):
        encoded = array
    elif pa.types.is_null(kind):
        return Levels(np.zeros(len(array), dtype=np.intp), [None])
    else:
        try:
            encoded = pc.dictionary_encode(array)
        except pa.ArrowNotImplementedError:
            raise ChurnflowError(f"column {column!r}: expected category text, got values of type {kind}") from None
    raw = encoded.dictionary.to_pylist()
    uniques: list[str | None] = []
    bad_codes: dict[int, str] = {}
    for code, value in enumerate(raw):
        if isinstance(value, float) and not np.isfinite(value) and not np.isnan(value):
            bad_codes[code] = f"expected a category, got {value}"
            uniques.append(None)
            continue
        level = normalize_level(value)
        if level is not None and FORMULA_LIKE.search(level):
            bad_codes[code] = f"looks like a spreadsheet formula: {_text(level)}"
        uniques.append(level)
    uniques.append(None)  # nulls
    codes = pc.fill_null(encoded.indices, len(uniques) - 1).to_numpy(zero_copy_only=False).astype(np.intp)
    if bad_codes:
        bad = np.isin(codes, list(bad_codes))
        problems.add(column, bad, lambda row: bad_codes[int(codes[row])])
    return Levels(codes, uniques)


class BatchEncoder:
    """Validates and encodes record batches for one contract (and the value column, if any)."""

    def __init__(self, contract: FeatureContract, value_column: str | None = None) -> None:
        self.contract = contract
        self.encoder = ColumnEncoder(contract)
        self.value_column = value_column

    def encode(self, batch: pa.RecordBatch | pa.Table) -> EncodedBatch:
        rows = batch.num_rows
        problems = Problems(rows)
        numeric = np.empty((rows, len(self.encoder.numeric)))
        for j, column in enumerate(self.encoder.numeric):
            numeric[:, j] = read_numbers(batch.column(column), column, problems)
        categorical = {
            column: read_levels(batch.column(column), column, problems) for column in self.encoder.categorical
        }
        value = None
        if self.value_column is not None:
            if self.value_column in self.encoder.numeric:
                value = numeric[:, self.encoder.numeric.index(self.value_column)].copy()
            else:
                value = read_numbers(batch.column(self.value_column), self.value_column, problems)
            problems.add(
                self.value_column,
                np.isnan(value) & ~problems.bad,
                lambda row: "blank, and value at risk needs the value column",
            )
        good = ~problems.bad
        if not good.all():  # only readable rows are encoded
            numeric = numeric[good]
            categorical = {c: Levels(levels.codes[good], levels.uniques) for c, levels in categorical.items()}
        blanks = np.count_nonzero(np.isnan(numeric), axis=0)  # before the encoder fills them
        filled = {c: int(n) for c, n in zip(self.encoder.numeric, blanks, strict=True) if n}
        encoded = self.encoder.encode(numeric, categorical, report_refused=True)
        features = encoded.features
        if encoded.refused:  # a strict contract's unseen or missing levels: rejects too
            positions = np.flatnonzero(good)
            refused_any = np.zeros(len(positions), dtype=bool)
            for column, mask in encoded.refused.items():
                levels = categorical[column]
                expected = self.contract.categorical[column]
                problems.add(
                    column,
                    _scatter(mask, positions, rows),
                    lambda row, c=column, lv=levels, ex=expected, at=positions: CategoryRefused(
                        c, row, lv.uniques[lv.codes[int(np.searchsorted(at, row))]], ex
                    ).describe(),
                )
                refused_any |= mask
            features = features[~refused_any]
            good = ~problems.bad
        return EncodedBatch(
            features=features,
            good=good,
            rejects=problems.reasons,
            value=None if value is None else value[good],
            unseen=encoded.unseen,
            missing=encoded.missing,
            filled=filled,
        )


def _scatter(mask: np.ndarray, positions: np.ndarray, rows: int) -> np.ndarray:
    full = np.zeros(rows, dtype=bool)
    full[positions[mask]] = True
    return full
