"""The core every other part stands on: the dataset config and table checks, the feature contract and
its one encoding, the model artifact, calibration and threshold, object storage, and errors.

Nothing here imports from serving (churnflow.predictor), the KFP components, the pipelines or the CLI
(the import-graph check in pyproject.toml holds it)."""
