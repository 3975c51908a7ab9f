"""Accuracy of a window without labels, estimated from calibrated confidences.

In the spirit of NannyML's confidence-based performance estimation: on the reference
profile (where the true labels are known) fit a monotone map from the model's confidence
to the probability that the prediction is right (isotonic regression, pool-adjacent-
violators); a window's expected accuracy is the mean of that map over its confidences.
It holds under covariate shift as long as the calibration does; it cannot see concept
drift (the inputs look the same while the labels change), which is what realized accuracy,
once labels arrive, is for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConfidenceCalibration:
    """A non-decreasing step map from confidence to P(correct)."""

    thresholds: np.ndarray
    values: np.ndarray

    def __call__(self, confidence: np.ndarray) -> np.ndarray:
        """Calibrated probability of being right, for each confidence."""
        index = np.searchsorted(self.thresholds, np.asarray(confidence, dtype=float),
                                side="right") - 1
        return self.values[np.clip(index, 0, len(self.values) - 1)]


def fit_confidence_calibration(confidence: np.ndarray, correct: np.ndarray) -> ConfidenceCalibration:
    """Isotonic fit of ``correct`` (0/1) on ``confidence`` by pool-adjacent-violators."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    if len(confidence) == 0 or len(confidence) != len(correct):
        raise ValueError("need one correctness flag per confidence, and at least one")
    # Equal confidences pool first, so every block starts at a distinct threshold.
    x, inverse = np.unique(confidence, return_inverse=True)
    y_sums = np.bincount(inverse, weights=correct)
    y_counts = np.bincount(inverse)
    # Blocks of [start confidence, sum of y, count]; merge while a block's mean falls.
    starts: list[float] = []
    sums: list[float] = []
    counts: list[float] = []
    for xi, si, ci in zip(x, y_sums, y_counts):
        starts.append(float(xi))
        sums.append(float(si))
        counts.append(float(ci))
        while len(sums) > 1 and sums[-2] / counts[-2] >= sums[-1] / counts[-1]:
            merged_sum, merged_count = sums.pop(), counts.pop()
            starts.pop()
            sums[-1] += merged_sum
            counts[-1] += merged_count
    return ConfidenceCalibration(np.array(starts), np.array(sums) / np.array(counts))


def estimated_accuracy(calibration: ConfidenceCalibration, confidence: np.ndarray) -> float:
    """Expected accuracy of a window from its confidences."""
    confidence = np.asarray(confidence, dtype=float)
    if len(confidence) == 0:
        raise ValueError("the window has no predictions")
    return float(calibration(confidence).mean())
