"""The train step of the churn pipeline."""
