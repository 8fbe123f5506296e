"""What preprocess leaves for the steps after it: the names of its files, and the training split's size.

A module of its own, with nothing but the standard library, so that a step needing only a file name
or the row count (tune's choice of workers, before it loads the fitting stack) does not import the
preprocessing (pandas, scikit-learn) to learn it.
"""

from __future__ import annotations

import json
from pathlib import Path

TRAIN_FILE = "train.parquet"
TEST_FILE = "test.parquet"
DATA_SUMMARY_FILE = "data_summary.json"
"""Written beside the contract: rows, the training split's rows, the positive rate, filled blanks."""


def train_rows(contract_dir: str | Path) -> int:
    """The training split's row count, from the summary preprocess wrote beside the contract."""
    return int(json.loads((Path(contract_dir) / DATA_SUMMARY_FILE).read_text())["train_rows"])
