"""The tuning steps of the churn pipeline: candidates, cross-validated scores, the choice."""
