"""The store's tables and queries (SQLAlchemy Core), the same on SQLite and PostgreSQL.

    predictions  one row per scored customer: request_id, row_index (position in the request),
                 customer_id (when the request carried one), model_name, model_version, ts (UTC),
                 features (JSON: the model's inputs as it read them), probability, churn
    outcomes     ground truth recorded later: request_id (+ optional row_index) or customer_id,
                 churned (0/1), ts (UTC, when it was recorded)

Timestamps are stored as naive UTC (`timestamp without time zone`), which both databases compare
the same way. The schema is created on first use (CREATE TABLE IF NOT EXISTS semantics).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from churnflow.core.errors import ChurnflowError

METADATA = sa.MetaData()
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only

PREDICTIONS = sa.Table(
    "predictions",
    METADATA,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("row_index", sa.Integer, nullable=False),
    sa.Column("customer_id", sa.String(128)),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("model_version", sa.String(128), nullable=False),
    sa.Column("ts", sa.DateTime(), nullable=False),
    sa.Column("features", sa.JSON, nullable=False),
    sa.Column("probability", sa.Double, nullable=False),
    sa.Column("churn", sa.SmallInteger, nullable=False),
    sa.Index("ix_predictions_request", "request_id", "row_index"),
    sa.Index("ix_predictions_customer", "customer_id"),
    sa.Index("ix_predictions_model_ts", "model_name", "ts"),
)

OUTCOMES = sa.Table(
    "outcomes",
    METADATA,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(128)),
    sa.Column("row_index", sa.Integer),
    sa.Column("customer_id", sa.String(128)),
    sa.Column("churned", sa.SmallInteger, nullable=False),
    sa.Column("ts", sa.DateTime(), nullable=False),
    sa.CheckConstraint("request_id IS NOT NULL OR customer_id IS NOT NULL", name="outcomes_have_a_key"),
    sa.Index("ix_outcomes_request", "request_id"),
    sa.Index("ix_outcomes_customer", "customer_id"),
)

try:  # the writer thread's main cost is JSON: orjson (installed with KServe) is much faster when present
    import orjson

    def _json_dumps(value: Any) -> str:
        return orjson.dumps(value).decode()

except ImportError:  # pragma: no cover - the train image has no orjson; reading JSON needs none
    import json

    def _json_dumps(value: Any) -> str:
        return json.dumps(value)


IN_CHUNK = 500  # keys per IN (...) clause: far below SQLite's and PostgreSQL's parameter limits


def utcnow() -> dt.datetime:
    """Now, as the naive UTC timestamp the tables store."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def to_utc_naive(value: dt.datetime) -> dt.datetime:
    """An aware datetime converted to naive UTC; a naive one is taken to be UTC already."""
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value


def normalize_url(url: str) -> str:
    """The SQLAlchemy URL for a store address, or a ChurnflowError naming what is accepted.

    `sqlite:///path` (or a bare file path) and `postgresql://...` (also `postgres://`, and explicit
    `postgresql+psycopg://`); PostgreSQL always goes through psycopg 3.
    """
    text = url.strip()
    if not text:
        raise ChurnflowError("store URL: empty; expected sqlite:///PATH or postgresql://USER@HOST/DB")
    if "://" not in text:
        return f"sqlite:///{Path(text).absolute()}"
    scheme, rest = text.split("://", 1)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        text = f"postgresql+psycopg://{rest}"
    elif scheme != "sqlite":
        raise ChurnflowError(
            f"store URL {redact(text)}: unsupported scheme {scheme!r}; expected sqlite:///PATH or postgresql://..."
        )
    try:
        make_url(text)
    except ArgumentError as error:
        raise ChurnflowError(f"store URL {redact(text)}: {error}") from None
    return text


def redact(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


class PredictionStore:
    """One database holding the predictions and outcomes tables.

    Every method either succeeds or raises SQLAlchemyError (the logger retries those); user-facing
    callers (CLI, drift check) go through `call`, which turns them into one-line ChurnflowErrors.
    """

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = normalize_url(url)
        self.display_url = redact(self.url)
        if self.url.startswith("sqlite"):
            # `timeout` is SQLite's busy wait on a locked file: the writer thread may wait, requests never do.
            engine = sa.create_engine(self.url, connect_args={"timeout": timeout}, json_serializer=_json_dumps)
        else:
            engine = sa.create_engine(
                self.url,
                pool_pre_ping=True,  # a pooled connection from before a database restart is replaced, not used
                pool_size=2,
                max_overflow=2,
                connect_args={"connect_timeout": max(1, round(timeout))},
                json_serializer=_json_dumps,
            )
        self.engine: Engine = engine
        self._schema_ready = False

    # -- schema and writes --------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        if not self._schema_ready:
            METADATA.create_all(self.engine, checkfirst=True)
            self._schema_ready = True

    def insert_predictions(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Writes prediction rows in one transaction (executemany)."""
        if not rows:
            return
        self.ensure_schema()
        with self.engine.begin() as connection:
            connection.execute(PREDICTIONS.insert(), list(rows))

    def insert_outcomes(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        self.ensure_schema()
        with self.engine.begin() as connection:
            connection.execute(OUTCOMES.insert(), list(rows))

    # -- reads ---------------------------------------------------------------------------------------

    def count(self, table: str = "predictions") -> int:
        self.ensure_schema()
        target = PREDICTIONS if table == "predictions" else OUTCOMES
        with self.engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(target)).scalar_one())

    def read_predictions(
        self,
        *,
        model_name: str | None = None,
        model_version: str | None = None,
        window: int | None = None,
        since: dt.datetime | None = None,
    ) -> pd.DataFrame:
        """The newest `window` predictions (or all since `since`), oldest first, features as dicts."""
        self.ensure_schema()
        query = sa.select(PREDICTIONS)
        if model_name:
            query = query.where(PREDICTIONS.c.model_name == model_name)
        if model_version:
            query = query.where(PREDICTIONS.c.model_version == model_version)
        if since is not None:
            query = query.where(PREDICTIONS.c.ts >= to_utc_naive(since))
        query = query.order_by(PREDICTIONS.c.ts.desc(), PREDICTIONS.c.id.desc())
        if window:
            query = query.limit(window)
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        frame = pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in PREDICTIONS.columns])
        return frame.iloc[::-1].reset_index(drop=True)

    def read_outcomes(self, request_ids: Iterable[str], customer_ids: Iterable[str]) -> pd.DataFrame:
        """Outcomes recorded for any of these request ids or customer ids."""
        self.ensure_schema()
        found = []
        with self.engine.connect() as connection:
            for column, keys in ((OUTCOMES.c.request_id, request_ids), (OUTCOMES.c.customer_id, customer_ids)):
                keys = sorted({k for k in keys if k is not None and k == k})
                for start in range(0, len(keys), IN_CHUNK):
                    query = sa.select(OUTCOMES).where(column.in_(keys[start : start + IN_CHUNK]))
                    found.extend(dict(r) for r in connection.execute(query).mappings())
        frame = pd.DataFrame(found, columns=[c.name for c in OUTCOMES.columns])
        return frame.drop_duplicates("id").sort_values(["ts", "id"]).reset_index(drop=True)

    def labelled(self, predictions: pd.DataFrame) -> pd.DataFrame:
        """The predictions that have ground truth, with a `churned` column.

        An outcome recorded by request id labels that request's rows (one row when it names a
        row_index); an outcome recorded by customer id labels that customer's latest prediction
        made before the outcome was recorded (the one that was acted on). Per key, the latest
        outcome wins; a request-level label beats a customer-level one.
        """
        if predictions.empty:
            return predictions.assign(churned=pd.Series(dtype="int64"))
        outcomes = self.read_outcomes(predictions["request_id"], predictions["customer_id"].dropna())
        churned = pd.Series(pd.NA, index=predictions.index, dtype="Int64")
        if not outcomes.empty:
            by_request = outcomes[outcomes["request_id"].notna()]
            if not by_request.empty:
                latest = by_request.groupby(["request_id", by_request["row_index"].fillna(-1)]).tail(1)
                whole = latest[latest["row_index"].isna()].set_index("request_id")["churned"]
                rowwise = latest[latest["row_index"].notna()]
                rowwise = rowwise.set_index(["request_id", rowwise["row_index"].astype("int64")])["churned"]
                keys = list(zip(predictions["request_id"], predictions["row_index"], strict=True))
                by_row = pd.Series([rowwise.get(k, pd.NA) for k in keys], index=predictions.index, dtype="Int64")
                by_whole = predictions["request_id"].map(whole).astype("Int64")
                churned = by_row.fillna(by_whole)
            by_customer = outcomes[outcomes["request_id"].isna() & outcomes["customer_id"].notna()]
            if not by_customer.empty:
                churned = churned.fillna(_customer_labels(predictions, by_customer.groupby("customer_id").tail(1)))
        labelled = predictions.assign(churned=churned)
        labelled = labelled[labelled["churned"].notna()]
        return labelled.assign(churned=labelled["churned"].astype("int64"))

    def close(self) -> None:
        self.engine.dispose()

    def call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Runs a store operation for a user-facing command: database errors become one line."""
        try:
            return function(*args, **kwargs)
        except SQLAlchemyError as error:
            reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
            raise ChurnflowError(f"store {self.display_url}: {what} failed ({reason})") from None


def _customer_labels(predictions: pd.DataFrame, outcomes: pd.DataFrame) -> pd.Series:
    """Each customer outcome labels the latest prediction of that customer made at or before it."""
    labels = pd.Series(pd.NA, index=predictions.index, dtype="Int64")
    candidates = predictions.loc[predictions["customer_id"].notna(), ["customer_id", "ts"]]
    merged = (
        candidates.rename_axis("position")
        .reset_index()
        .merge(outcomes[["customer_id", "ts", "churned"]].rename(columns={"ts": "outcome_ts"}), on="customer_id")
    )
    merged = merged[merged["ts"] <= merged["outcome_ts"]]
    acted_on = merged.sort_values(["ts", "position"]).groupby("customer_id").tail(1)
    labels.loc[acted_on["position"].to_numpy()] = acted_on["churned"].astype("int64").to_numpy()
    return labels
