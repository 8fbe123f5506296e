"""The churn training pipeline: its DAG (churn_pipeline.py), compiling and submitting it
(kubeflow.py) and running it locally through kfp.local (local.py)."""
