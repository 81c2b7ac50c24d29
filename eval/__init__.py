"""Evaluation: datasets, grading, metrics, runs, benchmarks and reports (`cat-eval`)."""
