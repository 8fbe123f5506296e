"""The preprocess step of the churn pipeline."""
