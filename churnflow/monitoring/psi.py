"""The population stability index and its thresholds: the one definition every part uses.

`churnflow drift`, the KFP drift check and the Prometheus rules (manifests/monitoring: the recording
rule `churnflow:feature_psi:1h` and the two feature-drift alerts) all mean this. PromQL cannot import
it, so tests/test_psi_definition.py evaluates the rules with promtool on the code's own bins and
checks their constants against these.
"""

from __future__ import annotations

import numpy as np

PSI_FLOOR = 1e-4
"""Empty bins count as this fraction, so PSI stays finite and a bin training never saw weighs heavily."""
PSI_WATCH = 0.1
"""PSI from which a feature is worth watching (common practice: below 0.1 is stable)."""
PSI_ACT = 0.25
"""PSI that is drift on its own (common practice: above 0.25 is a significant shift)."""


def psi(expected: np.ndarray | list[float], actual: np.ndarray | list[float]) -> float:
    """Population stability index of two distributions over the same bins (fractions).

    The sum over bins of (a - e) * ln(a / e), each fraction floored at PSI_FLOOR first and not
    renormalised afterwards: exactly what the recording rule can compute in one PromQL expression.
    """
    e = np.maximum(np.asarray(expected, dtype="float64"), PSI_FLOOR)
    a = np.maximum(np.asarray(actual, dtype="float64"), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))
