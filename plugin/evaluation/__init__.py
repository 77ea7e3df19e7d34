"""Evaluation: retrieval quality against judged queries, and how well probabilities are calibrated."""
