"""Reading and validating the customer table before anything is trained on it.

Every check here ends in a one-line ChurnflowError naming the column (and a sample of the bad
values), because these are the errors a user hits first when pointing churnflow at their own table.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from churnflow.core.config import DatasetConfig
from churnflow.core.contract import label_key, label_matches, normalize_level
from churnflow.core.errors import ChurnflowError
from churnflow.core.storage import OBJECT_SCHEMES, is_object_uri, open_object

LOCAL_SCHEMES = ("", "file")
DEFAULT_MAX_DATA_BYTES = 5 * 1024**3
# Text a spreadsheet would run as a formula if the table were exported and opened (CSV injection).
FORMULA_LIKE = re.compile(r"^(?:[=@\t\r]|[+-][^\d.\s])")
PANDAS_SCHEMES = ("http", "https", "abfs", "az")


def read_table(source: str) -> pd.DataFrame:
    """Reads a CSV from a local path, file:// URI, object storage (s3://, minio://, gs:// through
    churnflow.core.storage) or any other URI pandas can open (http)."""
    scheme = urlparse(source).scheme.lower()
    if is_object_uri(source):
        try:
            with open_object(source) as handle:
                _check_size(source, int(getattr(handle, "size", 0) or 0))
                return _read_csv(handle, source)
        except ChurnflowError as error:
            message = str(error)
            raise ChurnflowError(message if message.startswith("data ") else f"data {message}") from None
    if scheme in LOCAL_SCHEMES or (len(scheme) == 1 and Path(source).exists()):
        path = Path(urlparse(source).path if scheme == "file" else source)
        if not path.is_file():
            raise ChurnflowError(f"data {source}: no such file")
        _check_size(source, path.stat().st_size)
        target: str | Path = path
    elif scheme in PANDAS_SCHEMES:
        target = source
    else:
        raise ChurnflowError(
            f"data {source}: unsupported URI scheme {scheme!r} (expected a path, file://, "
            f"{', '.join(s + '://' for s in (*OBJECT_SCHEMES, *PANDAS_SCHEMES))})"
        )
    return _read_csv(target, source)


def _check_size(source: str, size: int) -> None:
    limit = int(os.environ.get("CHURNFLOW_MAX_DATA_BYTES", DEFAULT_MAX_DATA_BYTES))
    if size > limit:
        raise ChurnflowError(
            f"data {source}: {size} bytes exceed the limit of {limit} (set CHURNFLOW_MAX_DATA_BYTES to raise it)"
        )


def _read_csv(target: Any, source: str) -> pd.DataFrame:
    try:
        # Everything is read as text first so that type errors are ours to report, per column.
        return pd.read_csv(target, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise ChurnflowError(f"data {source}: the file is empty (no header row)") from None
    except pd.errors.ParserError as error:
        raise ChurnflowError(f"data {source}: not a readable CSV ({str(error).strip()})") from None
    except UnicodeDecodeError:
        raise ChurnflowError(f"data {source}: not UTF-8 text") from None
    except ImportError as error:
        raise ChurnflowError(f"data {source}: reading this URI needs an extra package ({error})") from None
    except OSError as error:
        raise ChurnflowError(f"data {source}: cannot read it ({error})") from None


def frame_digest(frame: pd.DataFrame) -> str:
    """SHA-256 of the table's content, recorded in the model metadata to tie a model to its data."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update("\x1f".join(map(str, frame.columns)).encode())
    return digest.hexdigest()


def _sample(values: pd.Series, limit: int = 3) -> str:
    return ", ".join(repr(v) for v in values.unique()[:limit])


@dataclass(frozen=True)
class ValidatedTable:
    """The typed table plus what typing learned: which numeric columns hold only whole numbers."""

    frame: pd.DataFrame
    integral_columns: tuple[str, ...]


COLUMNS_LISTED = 60
"""How many of a table's columns a missing-column error lists before saying how many more there are."""


def columns_hint(missing: list[str], available: list[str]) -> str:
    """The table's columns (all, or the first COLUMNS_LISTED and how many more) and the closest name
    to each missing one: a misspelt column is found at a glance, not by reading the file's header."""
    import difflib

    shown = ", ".join(available[:COLUMNS_LISTED])
    if len(available) > COLUMNS_LISTED:
        shown += f", … and {len(available) - COLUMNS_LISTED} more"
    by_case = {name.lower(): name for name in available}
    guesses = []
    for name in missing:
        close = [by_case[name.lower()]] if name.lower() in by_case else difflib.get_close_matches(name, available, 1)
        if close:
            guesses.append(f"{name!r}: did you mean {close[0]!r}?")
    return f"it has: {shown}" + (f"; {' '.join(guesses)}" if guesses else "")


def validate_table(raw: pd.DataFrame, config: DatasetConfig) -> ValidatedTable:
    """Checks the table against the config and returns a typed copy with just the configured columns.

    Numeric columns become numbers (blank cells become NaN, to be filled with the training median),
    categorical columns stay text, the target becomes 0/1. Raises ChurnflowError for a missing column,
    a non-numeric cell in a numeric column, target values other than two labels, an empty table or a
    table with a single class.
    """
    raw = raw.rename(columns=lambda c: str(c).strip())
    missing = [c for c in config.required_columns if c not in raw.columns]
    if missing:
        raise ChurnflowError(
            f"column(s) {', '.join(repr(c) for c in missing)} named in the dataset config are not in the data "
            f"({columns_hint(missing, [str(c) for c in raw.columns])})"
        )
    if raw.empty:
        raise ChurnflowError("data has a header but no rows")
    typed = pd.DataFrame(index=raw.index)
    integral: list[str] = []
    if config.id:
        typed[config.id] = raw[config.id]
    for column in config.numeric:
        if _already_numbers(raw[column]):  # typed input (generated, or a typed frame): no text to parse
            typed[column] = raw[column].astype("float64")
            _check_numbers(column, typed[column])
            if pd.api.types.is_integer_dtype(raw[column]):
                integral.append(column)
            continue
        text = raw[column].astype(str).str.strip()
        blank = text.eq("") | text.str.lower().isin(["nan", "na", "null", "none"])
        numbers = pd.to_numeric(text.where(~blank), errors="coerce")
        bad = numbers.isna() & ~blank
        if bad.any():
            raise ChurnflowError(
                f"numeric column {column!r}: {int(bad.sum())} non-numeric value(s), "
                f"e.g. {_sample(raw.loc[bad, column])}"
            )
        _check_numbers(column, numbers)
        typed[column] = numbers.astype("float64")
        if not text[~blank].str.contains(r"[.eE]").any():
            integral.append(column)
    for column in config.categorical:
        levels = raw[column].map(normalize_level)
        formulas = levels.dropna().astype(str).str.contains(FORMULA_LIKE)
        if formulas.any():
            raise ChurnflowError(
                f"categorical column {column!r}: {int(formulas.sum())} value(s) look like spreadsheet formulas, "
                f"e.g. {_sample(levels.dropna()[formulas])}; clean them before training"
            )
        typed[column] = levels
    typed[config.target] = _binary_target(raw[config.target], config)
    return ValidatedTable(frame=typed, integral_columns=tuple(integral))


def _already_numbers(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _check_numbers(column: str, numbers: pd.Series) -> None:
    """What the text path checks once cells are numbers: no infinities, not every value blank."""
    infinite = numbers.abs().eq(float("inf"))
    if infinite.any():
        raise ChurnflowError(f"numeric column {column!r}: {int(infinite.sum())} infinite value(s)")
    if numbers.isna().all():
        raise ChurnflowError(f"numeric column {column!r}: every value is blank")


def _binary_target(values: pd.Series, config: DatasetConfig) -> pd.Series:
    labels = values.map(label_key)
    if labels.isna().any():
        raise ChurnflowError(f"target column {config.target!r}: {int(labels.isna().sum())} blank value(s)")
    distinct = sorted(labels.unique(), key=str)
    positive = [v for v in distinct if label_matches(v, config.positive_label)]
    if len(distinct) > 2:
        raise ChurnflowError(
            f"target column {config.target!r}: expected two labels, found {len(distinct)}: "
            f"{', '.join(map(repr, distinct[:6]))}"
        )
    if not positive and len(distinct) == 2:
        hint = ""
        if isinstance(config.positive_label, bool):  # YAML reads an unquoted yes/no/true/false as a boolean
            hint = '; YAML read an unquoted yes/no/true/false as a boolean: quote it, e.g. positive_label: "Yes"'
        raise ChurnflowError(
            f"target column {config.target!r}: positive_label {config.positive_label!r} is not among its "
            f"labels {', '.join(map(repr, distinct))}{hint}"
        )
    if len(distinct) < 2:
        raise ChurnflowError(
            f"target column {config.target!r}: every row has the label {distinct[0]!r}; "
            "both churned and retained customers are needed to train"
        )
    return labels.map(lambda v: int(label_matches(v, config.positive_label))).astype("int64")


SPLIT_ROW_GROUP = 65_536
"""Rows per Parquet row group in a written split: a tuning rung reads only the groups its prefix needs."""


def compact_numbers(values: pd.Series) -> pd.Series:
    """float32 when every value survives the round trip exactly (NaN stays NaN), float64 otherwise.

    Trees split on float32 thresholds anyway; storing exactly representable columns in half the
    bytes halves what each tuning task reads and holds, without changing a single value."""
    as32 = values.astype("float32")
    same = (as32.astype("float64") == values) | values.isna()
    return as32 if bool(same.all()) else values


def write_split(frame: pd.DataFrame, path: str | Path) -> None:
    """Writes a typed split as Parquet, compactly: numbers as float32 where exact, categorical
    columns and the id as dictionary-encoded categoricals (codes plus a short list of levels).

    The row order is kept: the training split is already shuffled, so any prefix is a random sample
    (what successive halving reads)."""
    compact = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_float_dtype(values):
            compact[column] = compact_numbers(values)
        elif values.dtype == object:
            compact[column] = values.astype("category")
        else:
            compact[column] = values
    compact.to_parquet(path, index=False, row_group_size=SPLIT_ROW_GROUP)


def read_split(path: str | Path, numeric: list[str], categorical: list[str], rows: int | None = None) -> pd.DataFrame:
    """Reads a split written by write_split back with the types validate_table gave it (numbers as
    float64, levels as normalised text or None); `rows` reads only that many from the start."""
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    if rows is None or rows >= source.metadata.num_rows:
        table = source.read()
    else:
        groups, covered = [], 0
        while covered < rows:
            groups.append(len(groups))
            covered += source.metadata.row_group(groups[-1]).num_rows
        table = source.read_row_groups(groups).slice(0, rows)
    frame = table.to_pandas()
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    for column in numeric:
        frame[column] = frame[column].astype("float64")
    for column in categorical:
        frame[column] = frame[column].map(normalize_level)
    return frame
