"""The evaluate step of the churn pipeline."""
