"""The evaluation gate: what a candidate must reach to be deployed.

It has a module of its own, apart from the evaluation (logic.py), because the pipeline declares its
defaults when it is defined: `churnflow run` and `churnflow compile` import it, and importing the
evaluation would load scikit-learn and SciPy in that process for nothing (about a second of every
local run's start).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Gate(BaseModel):
    """What a candidate must reach to be deployed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_roc_auc: float = Field(0.70, ge=0, le=1)
    min_f1: float = Field(0.0, ge=0, le=1)
    min_precision: float = Field(0.0, ge=0, le=1)
    max_brier: float = Field(1.0, ge=0, le=1)
    compare_metric: str = "roc_auc"
    max_regression: float = Field(0.0, ge=0, le=1)
    """How far below the champion's `compare_metric` the candidate may fall and still deploy."""
