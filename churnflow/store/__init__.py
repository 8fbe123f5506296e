"""The prediction and outcome store: what the predictor scored, and what really happened later.

- `database`: the two tables (predictions, outcomes) on SQLite (default, `sqlite:///path`) or
  PostgreSQL (`postgresql://...`, psycopg 3) through SQLAlchemy Core, and the reads the drift
  check needs (a window of predictions, joined to their ground truth).
- `logger`: PredictionLogger, the predictor's asynchronous writer: a bounded buffer the request path
  appends to without blocking, drained by a background thread in batches, with retry and backoff
  while the store is away.
- `outcomes`: record_outcomes and the CSV reader behind `churnflow outcomes`.

SQLAlchemy is imported only when a store is really opened, so a predictor without a store pays
nothing for it.
"""

from churnflow.store.logger import PredictionLogger
from churnflow.store.outcomes import read_outcomes_csv, record_outcomes

__all__ = ["PredictionLogger", "read_outcomes_csv", "record_outcomes"]
