"""The drift check: logged predictions vs the deployed model's baselines, and retraining on drift."""
