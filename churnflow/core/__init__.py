"""The core every other part stands on: the dataset config and table checks, the feature contract and
its one encoding, the model artifact, calibration and threshold, object storage, and errors; and the
released model (released_model.py) with its scorer, explainer and tree reader, the one loader of a
model directory for serving, bulk scoring, evaluation and the drift check.

Nothing here imports from serving (churnflow.predictor), the KFP components, the pipelines or the CLI
(pyproject.toml's [tool.importlinter] contracts, checked by tests/test_import_graph.py, hold it)."""
