"""Uplift from a past campaign: who does the offer actually change? (`churnflow plan --uplift-from`)

Risk × value ranks the customers most likely to leave, but an offer pays only where it changes the
outcome. A campaign with a randomized control group measures that: among similar customers, the
control arm's churn rate minus the contacted arm's is the offer's effect. This module learns it per
customer with the two-model method (T-learner): one classifier for churn in the control arm, one in the
contacted arm, both on the dataset config's features; a customer's uplift is

    uplift(x) = P(churn | x, not contacted) − P(churn | x, contacted).

The classifiers are scikit-learn logistic regressions on standardized numbers and one-hot categories:
stable on arms of a few hundred customers, where tree ensembles learn mostly noise, and able to give
each segment its own effect (each arm has its own coefficient for every level). The arms come from a
campaign report directory (customers.csv: id, group, churned) and the features from the customer
table (--data), joined on the id; an arm smaller than MIN_ARM customers, or with fewer than
MIN_OUTCOMES churners or stayers, is too small to learn from and `plan` falls back to risk × value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churnflow.core.errors import ChurnflowError

MIN_ARM = 200
MIN_OUTCOMES = 20
METHOD = "two-model (T-learner) uplift, scikit-learn logistic regression per arm"


@dataclass
class Encoding:
    """The features as a numeric matrix: medians and scales of the numbers, levels of the categories."""

    numeric: list[str]
    categorical: list[str]
    medians: dict[str, float]
    scales: dict[str, float]
    levels: dict[str, list[str]]

    @classmethod
    def fit(cls, frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> Encoding:
        numbers = {c: pd.to_numeric(frame[c], errors="coerce") for c in numeric}
        medians = {c: float(v.median()) if v.notna().any() else 0.0 for c, v in numbers.items()}
        scales = {c: float(v.fillna(medians[c]).std()) or 1.0 for c, v in numbers.items()}
        levels = {c: sorted(frame[c].astype(str).str.strip().unique().tolist()) for c in categorical}
        return cls(numeric, categorical, medians, scales, levels)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        columns = [
            (
                (pd.to_numeric(frame[c], errors="coerce").fillna(self.medians[c]) - self.medians[c]) / self.scales[c]
            ).to_numpy(dtype=np.float64)
            for c in self.numeric
        ]
        for c in self.categorical:
            text = frame[c].astype(str).str.strip().to_numpy()
            columns += [(text == level).astype(np.float64) for level in self.levels[c]]
        return np.column_stack(columns) if columns else np.zeros((len(frame), 0))


@dataclass
class UpliftModel:
    encoding: Encoding
    control: Any
    contacted: Any
    arms: dict[str, int]

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        x = self.encoding.transform(frame)
        return self.control.predict_proba(x)[:, 1] - self.contacted.predict_proba(x)[:, 1]


def read_arms(report_dir: str) -> pd.DataFrame:
    """The past campaign's customers with outcomes (id, group, churned) from a campaign-report directory."""
    from churnflow.core.storage import open_object

    try:
        with open_object(f"{report_dir.rstrip('/')}/customers.csv") as handle:
            arms = pd.read_csv(handle, dtype={"group": str}, keep_default_na=False)
    except ChurnflowError as error:
        raise ChurnflowError(
            f"--uplift-from {report_dir}: no readable customers.csv (the output of churnflow campaign-report?): {error}"
        ) from None
    if list(arms.columns[1:]) != ["group", "churned"]:
        raise ChurnflowError(f"--uplift-from {report_dir}: customers.csv: expected columns id, group, churned")
    arms[arms.columns[0]] = arms[arms.columns[0]].astype(str)
    return arms


def read_features(data_uri: str, id_column: str, features: list[str]) -> pd.DataFrame:
    """The customer table's id and feature columns, ids as text."""
    from churnflow.scoring.bulk import open_table

    dataset, _ = open_table(data_uri, [id_column, *features], 1 << 16)
    frame = dataset.to_table(columns=[id_column, *features]).to_pandas()
    frame[id_column] = frame[id_column].astype(str)
    return frame


def too_small(arms: pd.DataFrame) -> str | None:
    """Why the arms cannot teach an uplift model (None: they can)."""
    for group, name in (("control", "control"), ("contact", "contacted")):
        arm = arms.churned[arms.group == group]
        churned = int(arm.sum())
        if len(arm) < MIN_ARM or min(churned, len(arm) - churned) < MIN_OUTCOMES:
            return (
                f"the {name} arm has {len(arm)} customers with outcomes ({churned} churned); learning uplift needs "
                f"at least {MIN_ARM}, with {MIN_OUTCOMES} churners and {MIN_OUTCOMES} stayers"
            )
    return None


def fit(arms: pd.DataFrame, features: pd.DataFrame, numeric: list[str], categorical: list[str]) -> UpliftModel:
    """The two classifiers, on the arms joined with their features."""
    from sklearn.linear_model import LogisticRegression

    id_column = features.columns[0]
    joined = arms.rename(columns={arms.columns[0]: id_column}).merge(features, on=id_column, how="inner")
    encoding = Encoding.fit(joined, numeric, categorical)
    models = {}
    for group in ("control", "contact"):
        part = joined[joined.group == group]
        model = LogisticRegression(max_iter=2000)
        model.fit(encoding.transform(part), part.churned.to_numpy(dtype=np.int64))
        models[group] = model
    counts = {g: int((joined.group == g).sum()) for g in ("control", "contact")}
    return UpliftModel(encoding, models["control"], models["contact"], counts)


def estimate(report_dir: str, data_uri: str, config: Any, ids: list[str]) -> tuple[np.ndarray | None, list[str]]:
    """Each customer's uplift (aligned with `ids`), or None and why (then `plan` ranks by risk × value)."""
    if config is None or not config.id:
        raise ChurnflowError("--uplift-from: needs --config with an `id` column (to join the past outcomes)")
    arms = read_arms(report_dir)
    features = read_features(data_uri, config.id, config.features)
    known = arms[arms.columns[0]].isin(features[config.id])
    notes = []
    if not known.all():
        notes.append(
            f"{int((~known).sum())} customers of the past campaign are not in --data: left out of the uplift model"
        )
    reason = too_small(arms[known])
    if reason:
        return None, [*notes, f"{reason}: ranking by risk × value instead of uplift"]
    model = fit(arms[known], features, config.numeric, config.categorical)
    by_id = features.set_index(config.id)
    missing = [key for key in ids if key not in by_id.index]
    if missing:
        raise ChurnflowError(f"--data: {len(missing)} scored customers are not in the table (e.g. {missing[0]!r})")
    uplift = model.predict(by_id.loc[ids].reset_index())
    notes.append(
        f"ranked by uplift ({METHOD}; arms of {model.arms['contact']:,} contacted and {model.arms['control']:,} "
        f"control customers); mean estimated uplift {uplift.mean():+.3f}"
    )
    return uplift, notes
