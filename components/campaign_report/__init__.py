"""The campaign report: a planned campaign's outcomes measured against its randomized control group."""
