"""Drift statistics: pure functions over arrays that return small result objects."""

from monitor.drift.classes import (
    class_frequencies,
    homogeneity,
    label_shift,
    per_class_embedding_drift,
)
from monitor.drift.effect import MIN_AUC, MIN_PSI, MIN_WASSERSTEIN, normalized_wasserstein, psi
from monitor.drift.embedding import (
    DriftResult,
    EmbeddingDrift,
    embedding_drift,
    embedding_drift_within_and_pooled,
)
from monitor.drift.performance import (
    ConfidenceCalibration,
    estimated_accuracy,
    fit_confidence_calibration,
)

__all__ = [
    "MIN_AUC",
    "MIN_PSI",
    "MIN_WASSERSTEIN",
    "ConfidenceCalibration",
    "DriftResult",
    "EmbeddingDrift",
    "class_frequencies",
    "embedding_drift",
    "embedding_drift_within_and_pooled",
    "estimated_accuracy",
    "fit_confidence_calibration",
    "homogeneity",
    "label_shift",
    "normalized_wasserstein",
    "per_class_embedding_drift",
    "psi",
]
