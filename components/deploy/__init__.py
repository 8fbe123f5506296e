"""The deploy step of the churn pipeline."""
