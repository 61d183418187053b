"""Naive baselines that every model must beat."""
