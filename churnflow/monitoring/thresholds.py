"""The drift check's settings and their defaults, declared once.

A module of its own, without pandas and scipy, so that `churnflow drift`'s options, the KFP drift
component and the drift pipeline's parameters can all read the same defaults without the cost of
importing the statistics (the CLI builds its parser for every command).
"""

from __future__ import annotations

from dataclasses import dataclass

from churnflow.core.errors import ChurnflowError
from churnflow.monitoring.psi import PSI_ACT, PSI_WATCH

DEFAULT_WINDOW = 10_000
"""the newest predictions a check reads when neither a window nor a start time is given"""


@dataclass(frozen=True)
class Thresholds:
    """When a statistic counts as drift; every one is a `churnflow drift` option."""

    psi_watch: float = PSI_WATCH
    psi_act: float = PSI_ACT
    alpha: float = 0.05
    """family-wise significance level, divided among the features tested (Bonferroni)"""
    precision_drop: float = 0.10
    """relative precision drop against the evaluation that counts as accuracy drift (0.10 = 10%)"""
    min_rows: int = 100
    """fewest predictions in the window for data and prediction drift to be judged"""
    min_labelled: int = 100
    """fewest predictions with ground truth for accuracy drift to be judged"""

    def __post_init__(self) -> None:
        if not 0 < self.psi_watch <= self.psi_act:
            raise ChurnflowError(
                f"drift thresholds: need 0 < psi_watch <= psi_act, got {self.psi_watch} and {self.psi_act}"
            )
        if not 0 < self.alpha < 1:
            raise ChurnflowError(f"drift thresholds: alpha must be between 0 and 1, got {self.alpha}")
        if not 0 < self.precision_drop < 1:
            raise ChurnflowError(f"drift thresholds: precision_drop must be between 0 and 1, got {self.precision_drop}")
        if self.min_rows < 1 or self.min_labelled < 1:
            raise ChurnflowError("drift thresholds: min_rows and min_labelled must be at least 1")


DEFAULT_THRESHOLDS = Thresholds()
