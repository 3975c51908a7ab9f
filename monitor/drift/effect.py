"""Effect sizes: how far apart two samples are, in units that do not grow with their size.

A p-value answers "could this difference be chance?" and, with enough rows, says "no" to
differences nobody cares about: against a fixed reference a window of 10,000 clean
predictions made the KS test fire on an offset of 0.05 standard deviations in one feature.
A verdict therefore needs an effect that matters as well as a p-value; these are the
effects, each with the threshold vidmon uses by default and why.

- Numerical columns: the Wasserstein-1 distance between the two samples divided by the
  reference's standard deviation ("the window moved by this many reference spreads"),
  floored at 5 % of the reference's median size so that a column that barely varies
  cannot turn a tiny move into a huge effect.
  Evidently's own ``wasserstein`` test uses 0.1. vidmon's default is 0.2 because a
  reference of a few hundred rows scatters by itself: two clean samples of vidmon's
  synthetic traffic (300 reference, 200 window rows) were up to 0.11 apart, while every
  simulated camera fault moved its decisive feature by 0.45 or more.
- Categorical columns (the predicted class mix): the population stability index,
  sum (p_cur - p_ref) ln(p_cur / p_ref), with empty classes smoothed to 1e-4 (as
  Evidently does). Below 0.1 is the usual "no significant change".
- Embeddings: the area under the ROC curve of the kernel witness (see
  :mod:`monitor.drift.embedding`): 0.5 when window and reference cannot be told apart,
  1.0 when they are separable. 0.55 is Evidently's threshold for its domain classifier.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata

MIN_WASSERSTEIN = 0.2
MIN_PSI = 0.1
MIN_AUC = 0.55
_SCALE_FLOOR = 1e-3  # the scale's absolute floor, for columns centred on zero
# A reference spread below 5 % of the column's typical value is too narrow to measure moves
# in: confidence that always reads 0.995 +- 0.001 would make a 0.0045 drop 4.5 "standard
# deviations" (seen: 0.45 under a hue shift that cost nothing), and one camera's constant
# width a move of 640,000. The scale is floored there; few-valued columns are compared as
# categories anyway (see monitor.column_drift).
RELATIVE_SCALE_FLOOR = 0.05
_PSI_FLOOR = 1e-4


def normalized_wasserstein(reference: np.ndarray, current: np.ndarray) -> float:
    """Wasserstein-1 distance between two 1-d samples over the reference's scale
    (:func:`reference_scale`: a constant column that jumps has a large but finite effect).
    NaNs are dropped; NaN when a side is empty."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    cur = np.sort(np.asarray(current, dtype=np.float64))
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if not len(ref) or not len(cur):
        return float("nan")
    # W1 is the integral of |F_ref - F_cur| over the pooled support.
    pooled = np.concatenate([ref, cur])
    pooled.sort(kind="mergesort")
    gaps = np.diff(pooled)
    f_ref = np.searchsorted(ref, pooled[:-1], side="right") / len(ref)
    f_cur = np.searchsorted(cur, pooled[:-1], side="right") / len(cur)
    distance = float(np.sum(np.abs(f_ref - f_cur) * gaps))
    return distance / reference_scale(ref)


def reference_scale(reference: np.ndarray) -> float:
    """The unit effects are measured in: the reference's standard deviation, floored at
    5 % of its median's size (and at 1e-3), so it cannot vanish."""
    ref = np.asarray(reference, dtype=np.float64)
    return max(float(ref.std()), RELATIVE_SCALE_FLOOR * abs(float(np.median(ref))),
               _SCALE_FLOOR)


def psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Population stability index between two samples' counts over the same categories;
    NaN when a side has no rows."""
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return float("nan")
    p = np.clip(ref / ref.sum(), _PSI_FLOOR, None)
    q = np.clip(cur / cur.sum(), _PSI_FLOOR, None)
    return float(np.sum((q - p) * np.log(q / p)))


def auc(negatives: torch.Tensor, positives: torch.Tensor) -> float:
    """P(positive score > negative score) + half the ties (Mann-Whitney), from ranks."""
    scores = torch.cat([negatives, positives]).double().cpu().numpy()
    ranks = rankdata(scores)
    n_neg, n_pos = len(negatives), len(positives)
    if not n_neg or not n_pos:
        return float("nan")
    u = ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_neg * n_pos))
