"""Accuracy under covariate shift: the labeled reference reweighted to look like the window.

A domain classifier learns to tell the window's clips from the reference's by their
embeddings and class probabilities. Its odds give each reference clip a weight, the
density ratio p_window(x) / p_reference(x), and the weighted share of reference clips the
model got right estimates the window's accuracy (importance weighting; Shimodaira 2000,
Sugiyama et al. 2007). No fitting ahead of time, so it reacts to shifts nobody planned
for, as long as two things hold: only the inputs moved (P(correct | x) is the reference's:
a shift of meaning is invisible to it, as to every label-free method), and the window
lies where the reference has clips. How far the second holds is measured, not assumed:

- ``domain_auc``: how well the classifier, scored out of fold, tells the two apart: 0.5
  when the window looks like the reference, 1 when nothing in the reference looks like it;
- ``effective_rows``: how many reference clips the weights effectively use,
  (sum w)^2 / sum w^2: a few heavy clips standing for a whole window estimate nothing.

The classifier is a ridge-penalised logistic regression on the embeddings' leading
principal components and the probabilities, fitted in folds so that every reference clip
is weighted by a fit that did not see it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from monitor.drift.effect import auc
from monitor.estimation.base import Z95, Estimate
from monitor.estimation.signals import fit_error_model

METHOD = "reweighted"
COMPONENTS = 16  # principal components of the embeddings the domain classifier sees
FOLDS = 5
MAX_ROWS = 3000  # rows per side the classifier is fitted on, at most (drawn at random)
MAX_WEIGHT = 20.0  # a reference clip stands for at most this many median clips


@dataclass(frozen=True)
class Reweighted:
    """The reweighted estimate and how far the window is inside the reference's cover."""

    estimate: Estimate
    domain_auc: float
    effective_rows: float
    reference_rows: int


def domain_features(embeddings: np.ndarray, probabilities: np.ndarray, basis: np.ndarray,
                    centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """What the domain classifier sees of each clip: standardised embeddings projected on
    ``basis`` (principal directions, d x k) and the square roots of the class
    probabilities (so a confident and an unsure answer differ in every class)."""
    projected = ((np.asarray(embeddings, np.float64) - centre) / scale) @ basis
    return np.column_stack([projected, np.sqrt(np.clip(probabilities, 0.0, 1.0))])


def _bounded(features: np.ndarray, bound: float = 4.0) -> np.ndarray:
    """Features standardised over both sides and clipped at ``bound`` standard deviations,
    constant ones dropped. A class the reference almost never predicts has a probability
    column that is nearly constant in a fold; standardised by the fold alone, a held-out
    clip with a real value there scored 1.0 (odds of a million), and one clip held the
    whole estimate (effective rows 1 on a clean window)."""
    spread = features.std(axis=0)
    keep = spread > 1e-6
    z = (features[:, keep] - features[:, keep].mean(axis=0)) / spread[keep]
    return np.clip(z, -bound, bound)


def _principal_basis(x: np.ndarray, k: int) -> np.ndarray:
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    return vt[:k].T


def reweighted_accuracy(reference_embeddings: np.ndarray, reference_probabilities: np.ndarray,
                        reference_correct: np.ndarray, window_embeddings: np.ndarray,
                        window_probabilities: np.ndarray, *, seed: int = 0) -> Reweighted:
    """The window's accuracy as the reference's, reweighted by out-of-fold density ratios,
    with a 95 % interval from the weights' effective sample size and the window's own
    sampling error."""
    rng = np.random.default_rng(seed)
    correct = np.asarray(reference_correct, dtype=float)
    m_all, n_all = len(correct), len(window_embeddings)
    if m_all < 2 * FOLDS or n_all < 2:
        raise ValueError(f"reweighting needs {2 * FOLDS} reference clips and 2 window clips")
    window_rows = rng.permutation(n_all)[:MAX_ROWS]
    ref_emb = np.asarray(reference_embeddings, np.float64)
    win_emb = np.asarray(window_embeddings, np.float64)[window_rows]
    pooled = np.vstack([ref_emb, win_emb])
    centre, scale = pooled.mean(axis=0), pooled.std(axis=0) + 1e-6
    basis = _principal_basis((pooled - centre) / scale, min(COMPONENTS, pooled.shape[1]))
    features = _bounded(np.vstack([
        domain_features(ref_emb, reference_probabilities, basis, centre, scale),
        domain_features(win_emb, np.asarray(window_probabilities)[window_rows], basis,
                        centre, scale)]))
    m, n = m_all, len(window_rows)
    side = np.r_[np.zeros(m), np.ones(n)]
    # Each side weighs as much as the other in the fit, so the odds are the density ratio
    # times one constant, which the normalised weights do not see.
    balance = np.r_[np.full(m, (m + n) / (2 * m)), np.full(n, (m + n) / (2 * n))]
    folds = np.r_[rng.permutation(m) % FOLDS, rng.permutation(n) % FOLDS]
    scores = np.empty(m + n)
    for fold in range(FOLDS):
        fit = folds != fold
        model = fit_error_model(features[fit], side[fit], balance[fit])
        scores[~fit] = model.p_correct(features[~fit])
    domain_auc = auc_of(scores[:m], scores[m:])
    odds = np.clip(scores[:m], 1e-6, 1 - 1e-6)
    weights = odds / (1 - odds)
    # Truncated against the median weight, which one extreme clip cannot move (against the
    # mean, a single weight of 1e6 raises its own cap and keeps the whole estimate).
    weights = np.minimum(weights / np.median(weights), MAX_WEIGHT)
    weights /= weights.sum()
    value = float(weights @ correct)
    effective = float(1.0 / np.square(weights).sum())
    # The weighted mean's own variance, and the window's: its accuracy is a sample too.
    variance = float(np.square(weights) @ np.square(correct - value)) + \
        value * (1 - value) / n_all
    # A weighted mean of 0/1 outcomes that are all alike has no spread of its own; the
    # effective count still bounds what it can claim (Wilson's centre at p = 0 or 1).
    variance = max(variance, (Z95 ** 2 / 4) / (effective + Z95 ** 2) ** 2)
    half = Z95 * math.sqrt(variance)
    estimate = Estimate(METHOD, value, max(0.0, value - half), min(1.0, value + half))
    return Reweighted(estimate, domain_auc, effective, m)


def auc_of(reference_scores: np.ndarray, window_scores: np.ndarray) -> float:
    """P(a window clip scores above a reference clip)."""
    import torch

    return auc(torch.as_tensor(reference_scores), torch.as_tensor(window_scores))
