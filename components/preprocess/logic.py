"""Preprocess: read and validate the customer table, split it, and write the feature contract."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.model_selection import train_test_split

from churnflow.components.preprocess.outputs import DATA_SUMMARY_FILE, TEST_FILE, TRAIN_FILE
from churnflow.core.config import DatasetConfig
from churnflow.core.contract import FeatureContract
from churnflow.core.data import frame_digest, read_table, validate_table, write_split
from churnflow.core.errors import ChurnflowError
from churnflow.core.synthetic import synthetic_customers


@dataclass(frozen=True)
class PreprocessSummary:
    source: str
    data_sha256: str
    rows: int
    train_rows: int
    test_rows: int
    positive_rate: float
    filled_blanks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per numeric column with blanks: how many cells were blank and the training median they are read as."""


def load_source(data_uri: str, synthetic_rows: int, seed: int) -> tuple[pd.DataFrame, str]:
    """The raw table and a description of where it came from ("" means synthetic data)."""
    if data_uri.strip():
        return read_table(data_uri.strip()), data_uri.strip()
    if synthetic_rows < 10:
        raise ChurnflowError(f"synthetic_rows: expected at least 10, got {synthetic_rows}")
    return synthetic_customers(synthetic_rows, seed), f"synthetic(rows={synthetic_rows}, seed={seed})"


def split_table(frame: pd.DataFrame, target: str, test_size: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified train/test split with a fixed seed; explains when a class is too rare to split."""
    if not 0.0 < test_size < 1.0:
        raise ChurnflowError(f"test_size: expected a fraction between 0 and 1, got {test_size}")
    counts = frame[target].value_counts()
    n_test = int(round(len(frame) * test_size))
    if counts.min() < 2 or n_test < 2 or len(frame) - n_test < 2:
        raise ChurnflowError(
            f"target column {target!r}: {len(frame)} rows with class counts {counts.to_dict()} are too few for a "
            f"stratified {1 - test_size:.0%}/{test_size:.0%} split (need at least 2 of each class on each side)"
        )
    try:
        train, test = train_test_split(frame, test_size=test_size, random_state=seed, stratify=frame[target])
    except ValueError as error:
        raise ChurnflowError(f"target column {target!r}: cannot split stratified ({error})") from None
    return train.reset_index(drop=True), test.reset_index(drop=True)


def preprocess(
    data_uri: str,
    config: DatasetConfig,
    train_dir: str | Path,
    test_dir: str | Path,
    contract_dir: str | Path,
    synthetic_rows: int = 1000,
    seed: int = 42,
    test_size: float = 0.2,
) -> PreprocessSummary:
    """Reads, validates and splits the table; writes train.parquet, test.parquet (compact:
    churnflow.core.data.write_split) and contract.json."""
    raw, source = load_source(data_uri, synthetic_rows, seed)
    validated = validate_table(raw, config)
    train, test = split_table(validated.frame, config.target, test_size, seed)
    contract = FeatureContract.from_training_frame(train, config, validated.integral_columns)
    for directory in (train_dir, test_dir, contract_dir):
        Path(directory).mkdir(parents=True, exist_ok=True)
    write_split(train, Path(train_dir) / TRAIN_FILE)
    write_split(test, Path(test_dir) / TEST_FILE)
    contract.save(contract_dir)
    summary = PreprocessSummary(
        source=source,
        data_sha256=frame_digest(raw),
        rows=len(validated.frame),
        train_rows=len(train),
        test_rows=len(test),
        positive_rate=float(validated.frame[config.target].mean()),
        filled_blanks=filled_blanks(validated.frame, contract),
    )
    (Path(contract_dir) / DATA_SUMMARY_FILE).write_text(json.dumps(asdict(summary), indent=2) + "\n")
    return summary


def filled_blanks(frame: pd.DataFrame, contract: FeatureContract) -> dict[str, dict[str, Any]]:
    """Blank numeric cells of the whole table (training and test) per column, with the value used.

    Blanks are read as the training median by the one encoder; saying so (run's output, the card)
    keeps a silent imputation from passing as clean data."""
    counts = frame[list(contract.numeric)].isna().sum()
    return {
        column: {"blanks": int(count), "value": contract.numeric_fill[column]}
        for column, count in counts.items()
        if count
    }
