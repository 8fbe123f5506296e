"""Watching the deployed model: the training reference, the population stability index, the drift
check and its reports. The prediction and outcome store it reads is churnflow.store."""
