"""Ground truth, recorded later: which scored customers really churned.

Each outcome names the prediction it settles by `request_id` (optionally with `row_index`, for a
request that scored several customers) or by `customer_id`, and says `churned` (1/0, true/false,
yes/no). `record_outcomes` validates and writes them; `read_outcomes_csv` reads the CSV that
`churnflow outcomes --csv` takes. Every problem is one line naming the row and the field.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from churnflow.core.errors import ChurnflowError

KEYS = ("request_id", "customer_id")
COLUMNS = ("request_id", "row_index", "customer_id", "churned", "ts")
TRUE = {"1", "true", "yes", "y", "t"}
FALSE = {"0", "false", "no", "n", "f"}
MAX_KEY = 128
CHUNK = 1000


def parse_churned(value: Any, where: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    text = str(value).strip().lower() if value is not None else ""
    if text in TRUE or text == "1.0":
        return 1
    if text in FALSE or text == "0.0":
        return 0
    raise ChurnflowError(f"{where}: churned must be 1/0, true/false or yes/no, got {str(value)[:40]!r}")


def _key(value: Any, name: str, where: str) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if len(text) > MAX_KEY:
        raise ChurnflowError(f"{where}: {name} is longer than {MAX_KEY} characters")
    return text or None


def _timestamp(value: Any, where: str) -> dt.datetime:
    from churnflow.store.database import to_utc_naive, utcnow

    if value is None or (isinstance(value, str) and not value.strip()):
        return utcnow()
    if isinstance(value, dt.datetime):
        return to_utc_naive(value)
    try:
        return to_utc_naive(dt.datetime.fromisoformat(str(value).strip()))
    except ValueError:
        raise ChurnflowError(f"{where}: ts must be an ISO 8601 time such as 2026-05-01T12:00Z, got {value!r}") from None


def validate_outcome(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    """One outcome row checked and normalised into the outcomes table's columns."""
    request_id = _key(row.get("request_id"), "request_id", where)
    customer_id = _key(row.get("customer_id"), "customer_id", where)
    if request_id is None and customer_id is None:
        raise ChurnflowError(f"{where}: needs a request_id or a customer_id")
    if "churned" not in row:
        raise ChurnflowError(f"{where}: missing churned")
    row_index = row.get("row_index")
    if row_index is not None and str(row_index).strip() != "":
        if request_id is None:
            raise ChurnflowError(f"{where}: row_index needs a request_id")
        try:
            row_index = int(str(row_index).strip())
        except ValueError:
            raise ChurnflowError(f"{where}: row_index must be a whole number, got {row_index!r}") from None
        if row_index < 0:
            raise ChurnflowError(f"{where}: row_index must be 0 or more, got {row_index}")
    else:
        row_index = None
    return {
        "request_id": request_id,
        "row_index": row_index,
        "customer_id": customer_id,
        "churned": parse_churned(row["churned"], where),
        "ts": _timestamp(row.get("ts"), where),
    }


def record_outcomes(store: Any, rows: Iterable[Mapping[str, Any]], source: str = "outcome") -> int:
    """Validates every row first, then writes them all (in chunks); returns how many were recorded.

    `store` is a PredictionStore or a store URL. Nothing is written when any row is invalid.
    """
    from churnflow.store.database import PredictionStore

    if isinstance(store, str):
        store = PredictionStore(store)
    checked = [validate_outcome(row, f"{source} {i}") for i, row in enumerate(rows, start=1)]
    for start in range(0, len(checked), CHUNK):
        store.call("recording outcomes", store.insert_outcomes, checked[start : start + CHUNK])
    return len(checked)


def read_outcomes_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of an outcomes CSV: a `churned` column and a `request_id` or `customer_id` column."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or []]
            if not header:
                raise ChurnflowError(f"{path}: empty; expected a header with churned and request_id or customer_id")
            if "churned" not in header:
                raise ChurnflowError(f"{path}: no churned column (columns: {', '.join(header)})")
            if not any(key in header for key in KEYS):
                raise ChurnflowError(f"{path}: needs a request_id or customer_id column (columns: {', '.join(header)})")
            reader.fieldnames = header
            return [{k: v for k, v in row.items() if k in COLUMNS} for row in reader]
    except FileNotFoundError:
        raise ChurnflowError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise ChurnflowError(f"{path}: not UTF-8 text") from None
    except csv.Error as error:
        raise ChurnflowError(f"{path}: not a readable CSV ({error})") from None
