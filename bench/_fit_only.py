"""Times training alone (the forest fit on an already encoded matrix), ours or the seed's settings."""

from __future__ import annotations

import json
import resource
import sys
import time

from sklearn.ensemble import RandomForestClassifier

from churnflow.components.train.logic import fit_model
from churnflow.config import load_config
from churnflow.contract import FeatureContract
from churnflow.data import validate_table
from churnflow.hyperparameters import ForestParams
from churnflow.synthetic import synthetic_customers


def main(rows: int, which: str) -> None:
    config = load_config(None)
    table = validate_table(synthetic_customers(rows), config)
    contract = FeatureContract.from_training_frame(table.frame, config)
    features, target = contract.encode_frame(table.frame), table.frame["churn"].to_numpy()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if which == "ours":
        model = fit_model(features, target, ForestParams())
    else:
        model = RandomForestClassifier(n_estimators=100, random_state=42).fit(features, target)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    nodes = sum(tree.tree_.node_count for tree in model.estimators_)
    print(
        json.dumps(
            {"seconds": seconds, "peak_rss_mib": peak / 1024, "rss_before_fit_mib": before / 1024, "tree_nodes": nodes}
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
