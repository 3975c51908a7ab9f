"""Drift statistics: pure functions over arrays that return small result objects."""

from monitor.drift.embedding import DriftResult, embedding_drift

__all__ = ["DriftResult", "embedding_drift"]
