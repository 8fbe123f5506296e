"""The tuning choice: the paired one-standard-error rule and which candidates it cannot yet decide.

Both ways of searching use it: the flat search and the tune step (logic.py) and successive halving
(halving.py), which is why it sits in a module of its own that neither of them imports back; the
rule itself is described in logic.py's docstring.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from churnflow.core.errors import ChurnflowError

REPEATS = 3
"""Repetitions of k-fold CV (reshuffled folds) on training splits under REPEAT_BELOW_ROWS rows."""
REPEAT_BELOW_ROWS = 20_000
REPEAT_CANDIDATES = 3
"""At most this many candidates (the best and the first listed within the noise) get the repetitions."""


def standard_error(scores: list[float]) -> float:
    """The standard error of a mean fold score: the sample standard deviation over √folds."""
    if len(scores) < 2:
        return 0.0
    return float(np.std(scores, ddof=1) / np.sqrt(len(scores)))


def search_repeats(train_rows: int) -> int:
    """REPEATS for a training split under REPEAT_BELOW_ROWS rows, else 1."""
    return REPEATS if train_rows < REPEAT_BELOW_ROWS else 1


def paired_difference(result: dict[str, Any], best: dict[str, Any]) -> tuple[float, float] | None:
    """(mean fold-by-fold difference from `best`, its corrected standard error), or None when the two
    were not scored on the same folds (different rows or fold counts: nothing to pair)."""
    mine, theirs = result.get("fold_scores", []), best.get("fold_scores", [])
    if len(mine) != len(theirs) or len(mine) < 2 or result.get("rows") != best.get("rows"):
        return None
    differences = np.subtract(mine, theirs)
    folds = int(result.get("folds") or len(mine) // int(result.get("repeats") or 1))
    # Nadeau & Bengio: held-out over training rows of one fold is 1/(k-1)
    correction = 1.0 / len(differences) + 1.0 / max(1, folds - 1)
    return float(np.mean(differences)), float(np.std(differences, ddof=1) * np.sqrt(correction))


RULE = (
    "first listed candidate whose mean fold-by-fold difference from the highest-scoring candidate, on the same "
    "folds, is within one (corrected) standard error of that difference"
)


def select_best(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The paired one-standard-error choice among the candidates, in the order they were listed.

    `results` keep the candidates' order (simplest first), which the pipeline's fan-in preserves. Each
    result is returned with its `paired_difference` and `paired_standard_error` from the best (None
    when it could not be paired; then its own mean is held against the best's own standard error)."""
    if not results:
        raise ChurnflowError("tuning: no candidate was scored")
    top = max(results, key=lambda r: r["score"])
    unpaired = top.get("standard_error", standard_error(top.get("fold_scores", [])))
    annotated, chosen, tolerance = [], None, unpaired
    for result in results:
        paired = paired_difference(result, top)
        difference, error = paired if paired else (result["score"] - top["score"], unpaired)
        entry = {
            **result,
            "paired_difference": paired and difference,
            "paired_standard_error": paired and error,
            "within_noise": bool(difference >= -error),
        }
        annotated.append(entry)
        if chosen is None and entry["within_noise"]:
            chosen, tolerance = entry, error
    assert chosen is not None  # the best itself always qualifies (difference 0)
    return {
        "best": chosen["params"],
        "metric": chosen["metric"],
        "best_score": chosen["score"],
        "rule": RULE,
        "highest_score": top["score"],
        "highest_params": top["params"],
        "tolerance": tolerance,
        "candidates": annotated,
    }


def undecided(results: list[dict[str, Any]], cap: int = REPEAT_CANDIDATES) -> list[dict[str, Any]]:
    """The candidates the paired rule cannot yet tell apart from the best: the best and the first
    listed within one standard error of it, at most `cap` in all, in listed order.

    Only the first listed within the noise can be chosen, so those are the ones worth more folds; the
    best is kept for them to be paired with. One candidate back means the rule has decided."""
    selection = select_best(results)
    top = selection["highest_params"]
    near = [c for c in selection["candidates"] if c["within_noise"] and c["params"] != top]
    keep = {id(c) for c in near[: max(0, cap - 1)]}
    return [r for r, c in zip(results, selection["candidates"], strict=True) if c["params"] == top or id(c) in keep]
