"""Successive halving: the schedule of tuning rungs on growing subsamples of a large training split.

A large table does not need every candidate cross-validated on every row to tell them apart. Rung 0
scores every candidate on `min_rows` rows; each later rung keeps the best third and scores them on
three times as many rows; the last rung's scores choose, by the same one-standard-error rule as a
flat search (selection.select_best). The chosen settings are then fitted on all rows by the train step.

Rows are a prefix of the training split, which preprocess wrote in shuffled order, so rung k's rows
are a uniform random sample and contain rung k-1's. The pipeline's DAG is static, so it always has
`RUNGS` rungs of cross-validation tasks; once a rung has decided (it used every row, or one
candidate is left), the later rungs carry its result through without fitting anything
(`{"carry": result}` items, answered at once by cv_score_op). Tables with at most
`min_rows × FACTOR` training rows are searched flat: every candidate on every row at rung 0.

A rung advances its best third by mean fold score and, if that leaves it out, the candidate the
one-standard-error rule would choose at that rung, so the simplest candidate is not dropped for a
difference smaller than the noise between folds.

A flat search on a training split under selection.REPEAT_BELOW_ROWS rows uses rung 1 for repeated
cross-validation instead: rung 0 scores every candidate on one k-fold, rung 1 gives only the
candidates the rule cannot yet separate from the best (selection.undecided) the other repetitions, on the
same folds, and the choice is made on their pooled folds; rung 2 carries it. Rung 1 is then one item
(`{"group": [items]}`, scored one after another in one task): two or three candidates' extra folds
take a few seconds, and a task each would cost more in start-up (about 2 s of CPU per local task,
more for a pod) than the fitting. If rung 0 leaves one
candidate undecided, it has decided. (A halving search on such a split repeats every rung's k-fold.)
"""

from __future__ import annotations

import math
from typing import Any

from churnflow.components.tune.selection import search_repeats, select_best, undecided
from churnflow.core.errors import ChurnflowError

FACTOR = 3
"""Each rung keeps a third of the candidates and gives them three times the rows."""
RUNGS = 3
"""Rungs of cross-validation tasks in the pipeline's DAG (10 default candidates: 10 → 4 → 2)."""
DEFAULT_MIN_ROWS = 10_000
"""Rung 0's rows: enough for a 5-fold CV score whose spread is a useful yardstick."""


def schedule(train_rows: int, min_rows: int) -> list[int]:
    """Rows per rung; [train_rows] alone means a flat search (halving off or the table is small)."""
    if min_rows < 0:
        raise ChurnflowError(f"halving_min_rows: expected 0 (off) or a positive row count, got {min_rows}")
    if min_rows == 0 or train_rows <= min_rows * FACTOR:
        return [train_rows]
    rows = [min(train_rows, min_rows * FACTOR**k) for k in range(RUNGS)]
    return sorted(set(rows))


def _item(index: int, params: dict[str, Any], rows: int, search: dict[str, Any], repeats: list[int]) -> dict[str, Any]:
    return {"index": index, "params": params, "rows": rows, "search": search, "repeats": repeats}


def _repeats_now(search: dict[str, Any]) -> list[int]:
    """The repetitions of k-fold a rung's items are scored on: all of them on a halving rung, the
    first alone at rung 0 of a flat search that repeats (the rest are for its undecided candidates)."""
    repeats = int(search.get("repeats", 1))
    return [0, 1] if len(search["schedule"]) == 1 else [0, repeats]


def start(candidates: list[dict[str, Any]], train_rows: int, min_rows: int) -> list[dict[str, Any]]:
    """Rung 0's items: every candidate, on the first rung's rows.

    Each item carries the search so far (`search`: the schedule and the rungs already scored), and
    cv_score hands it back with the result: the DAG passes one list from rung to rung, nothing else."""
    if not candidates:
        raise ChurnflowError("tuning: no candidate to score")
    rows = schedule(train_rows, min_rows)
    search = {
        "train_rows": train_rows,
        "schedule": rows,
        "factor": FACTOR,
        "rungs": [],
        "decided": False,
        "repeats": search_repeats(train_rows),
        "repeated": False,
    }
    return [_item(i, c, rows[0], search, _repeats_now(search)) for i, c in enumerate(candidates)]


def _ordered(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Results in the candidates' listed order (simplest first), whatever order the fan-in gave."""
    return sorted(results, key=lambda r: r.get("index", 0))


def _typed(result: dict[str, Any]) -> dict[str, Any]:
    """A result as cross_validate wrote it: KFP hands dicts between tasks as protobuf Structs, whose
    numbers all come back as floats (100 trees → 100.0)."""
    from churnflow.core.hyperparameters import model_params

    typed = {k: v for k, v in result.items() if k != "search"}
    typed["params"] = model_params(**result["params"]).model_dump()
    typed.update({k: int(result[k]) for k in ("index", "rows") if k in result})
    return typed


def _record(results: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The search with this rung's results added (a decided search is returned as it is)."""
    results = [one for r in results for one in r.get("group", [r])]
    if not results:
        raise ChurnflowError("tuning: no candidate was scored in this rung")
    search = results[0]["search"]
    if search["decided"]:
        return search, results
    results = _ordered([_typed(r) for r in results])
    rung = {"rung": len(search["rungs"]), "rows": int(results[0]["rows"]), "results": results}
    return {**search, "rungs": [*search["rungs"], rung]}, results


def advance(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records a rung's results and returns the next rung's items.

    Once the search has decided (the rung used every row, or one candidate is left), the next items
    carry the choice's result (`{"carry": result}`) and nothing more is fitted."""
    search, results = _record(results)
    if search["decided"]:
        return [{"carry": r} for r in results]
    rows = search["rungs"][-1]["rows"]
    repeats = int(search.get("repeats", 1))  # a search begun before repetitions were per candidate: 1
    if len(search["schedule"]) == 1 and repeats > 1 and not search.get("repeated"):
        again = undecided(results)
        if len(again) > 1:  # rung 1: the other repetitions for these alone, pooled with rung 0's folds
            search = {**search, "repeated": True}
            group = [
                {**_item(int(r["index"]), r["params"], rows, search, [1, repeats]), "earlier": _earlier(r)}
                for r in again
            ]
            return [{"index": group[0]["index"], "group": group, "search": search}]
    keep = max(1, math.ceil(len(results) / search["factor"]))
    best = sorted(results, key=lambda r: r["score"], reverse=True)[:keep]
    chosen = select_best(results)["best"]
    survivors = [r for r in results if r in best or r["params"] == chosen]
    next_rows = [r for r in search["schedule"] if r > rows]
    if not next_rows or len(survivors) == 1:
        search = {**search, "decided": True}
        return [{"carry": {**r, "search": search}} for r in results if r["params"] == chosen]
    return [_item(int(r["index"]), r["params"], next_rows[0], search, _repeats_now(search)) for r in survivors]


def _earlier(result: dict[str, Any]) -> dict[str, Any]:
    """What rung 1 pools with its own folds: rung 0's fold scores of the candidate."""
    return {k: result[k] for k in ("fold_scores", "repeats", "seconds")}


def finish(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The choice: the one-standard-error rule over the last rung that fitted anything.

    The selection's `candidates` are that rung's results (all scored on the same rows); `halving`
    records every rung. After a repetition rung they are followed, in listed order, by the candidates
    rung 0 left behind (`screened_out`, with rung 0's folds and paired differences)."""
    search, _ = _record(results)
    last = search["rungs"][-1]
    selection = select_best([_typed(r) for r in last["results"]])
    if search.get("repeated") and len(search["rungs"]) > 1:
        repeated = {int(r["index"]) for r in last["results"]}
        screened = [
            {**c, "screened_out": True}
            for c in select_best([_typed(r) for r in search["rungs"][0]["results"]])["candidates"]
            if int(c["index"]) not in repeated
        ]
        selection["candidates"] = sorted(selection["candidates"] + screened, key=lambda c: int(c["index"]))
    selection["halving"] = {
        "train_rows": int(search["train_rows"]),
        "schedule": [int(r) for r in search["schedule"]],
        "factor": int(search["factor"]),
        "tuning_rows": int(last["rows"]),
        "rungs": [
            {"rung": int(r["rung"]), "rows": int(r["rows"]), "candidates": [int(c["index"]) for c in r["results"]]}
            for r in search["rungs"]
        ],
    }
    return selection
