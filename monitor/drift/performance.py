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


def fit_confidence_calibration(confidence: np.ndarray, correct: np.ndarray,
                               min_block: int | None = None) -> ConfidenceCalibration:
    """Isotonic fit of ``correct`` (0/1) on ``confidence`` by pool-adjacent-violators, with
    every step holding at least ``min_block`` clips (default 5% of them). Without that
    floor, one wrong prediction at the lowest confidence of a small reference maps every
    less confident production clip to 0."""
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
    floor = max(1, len(confidence) // 20) if min_block is None else min_block
    starts, sums, counts = _merge_small_blocks(starts, sums, counts, floor)
    return ConfidenceCalibration(np.array(starts), np.array(sums) / np.array(counts))


def _merge_small_blocks(starts: list[float], sums: list[float], counts: list[float],
                        floor: int) -> tuple[list[float], list[float], list[float]]:
    """Pool consecutive blocks until each holds ``floor`` clips; the last remainder joins
    the block before it. Pooling neighbours of a non-decreasing map keeps it monotone."""
    out_starts: list[float] = []
    out_sums: list[float] = []
    out_counts: list[float] = []
    pending = None
    for start, total, count in zip(starts, sums, counts):
        if pending is None:
            pending = [start, total, count]
        else:
            pending[1] += total
            pending[2] += count
        if pending[2] >= floor:
            out_starts.append(pending[0])
            out_sums.append(pending[1])
            out_counts.append(pending[2])
            pending = None
    if pending is not None:
        if out_counts:
            out_sums[-1] += pending[1]
            out_counts[-1] += pending[2]
        else:
            out_starts, out_sums, out_counts = [pending[0]], [pending[1]], [pending[2]]
    return out_starts, out_sums, out_counts


def estimated_accuracy(calibration: ConfidenceCalibration, confidence: np.ndarray) -> float:
    """Expected accuracy of a window from its confidences."""
    confidence = np.asarray(confidence, dtype=float)
    if len(confidence) == 0:
        raise ValueError("the window has no predictions")
    return float(calibration(confidence).mean())
