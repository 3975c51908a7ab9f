"""Accuracy without labels (estimators fitted on corruptions, with intervals) and with few
labels (importance-weighted, from the labeling queue)."""

from monitor.estimation.base import COMBINED, HEADLINE, Estimate, Outputs, with_interval
from monitor.estimation.estimator import (
    METHODS,
    AccuracyEstimator,
    ShiftedSet,
    fit_estimator,
)

__all__ = ["COMBINED", "HEADLINE", "METHODS", "AccuracyEstimator", "Estimate", "Outputs", "ShiftedSet",
           "fit_estimator", "with_interval"]
