"""Per-clip signals of being wrong, and the logistic error model fitted on them.

A clip's signals: how sure the model is (confidence, margin, entropy), whether the
agreement heads side with it, how far its embedding lies from the reference centroid of
the class it was given and whether that centroid is the nearest one. Quality features are
left out on purpose: a shift in them says the traffic moved, not that a clip is wrong. The
error model maps them to P(correct); it is
fitted on the reference clips and their corrupted copies, where right and wrong are known.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitor.estimation.base import Outputs
from monitor.estimation.heads import AgreementHeads, share_agreeing
from monitor.profile import entropy

SIGNAL_NAMES: tuple[str, ...] = (
    "confidence", "margin", "entropy", "head_agreement", "head_confidence",
    "centroid_distance", "nearest_centroid_agrees")


@dataclass(frozen=True)
class Basis:
    """Reference statistics the signals are measured against: class centroids (C, d) and
    the median distance of each class's clips to their centroid (C,)."""

    centroids: np.ndarray
    class_scale: np.ndarray


def fit_basis(reference: Outputs, n_classes: int) -> Basis:
    """Class centroids and scales from labeled reference outputs."""
    labels = reference.labels
    if labels is None:
        raise ValueError("the reference needs true labels")
    emb = reference.embeddings.astype(np.float64)
    overall = emb.mean(axis=0)
    centroids = np.stack([emb[labels == c].mean(axis=0) if np.any(labels == c) else overall
                          for c in range(n_classes)])
    distances = np.linalg.norm(emb - centroids[labels], axis=1)
    fallback = float(np.median(distances)) + 1e-6
    class_scale = np.array([np.median(distances[labels == c]) + 1e-6 if np.any(labels == c)
                            else fallback for c in range(n_classes)])
    return Basis(centroids, class_scale)


def clip_signals(outputs: Outputs, basis: Basis, heads: AgreementHeads) -> np.ndarray:
    """The signals of :data:`SIGNAL_NAMES` for every clip: (n, len(SIGNAL_NAMES))."""
    p = outputs.probabilities.astype(np.float64)
    predicted = p.argmax(axis=1)
    top2 = np.sort(p, axis=1)[:, -2:] if p.shape[1] > 1 else np.c_[np.zeros(len(p)), p]
    head_p = heads.probabilities(outputs.embeddings)
    rows = np.arange(len(p))
    emb = outputs.embeddings.astype(np.float64)
    distances = np.linalg.norm(emb[:, None, :] - basis.centroids[None], axis=2)
    return np.column_stack([
        top2[:, 1],
        top2[:, 1] - top2[:, 0],
        entropy(p) / np.log(max(p.shape[1], 2)),
        share_agreeing(head_p, predicted),
        head_p[:, rows, predicted].mean(axis=0),
        # The floor keeps a clip that sits on its centroid (a class seen once) finite.
        np.log(distances[rows, predicted] / basis.class_scale[predicted] + 1e-3),
        (distances.argmin(axis=1) == predicted).astype(float),
    ])


@dataclass(frozen=True)
class ErrorModel:
    """Logistic regression of P(correct) on standardised signals."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def p_correct(self, signals: np.ndarray) -> np.ndarray:
        """P(correct) per clip."""
        z = ((signals - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def fit_error_model(signals: np.ndarray, correct: np.ndarray,
                    weights: np.ndarray | None = None, l2: float = 1.0,
                    iterations: int = 50) -> ErrorModel:
    """Weighted, ridge-penalised logistic regression by Newton's method (IRLS); the penalty
    (``l2`` on the sum of squared standardised coefficients) keeps it finite when the
    classes separate."""
    signals = np.asarray(signals, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    mean, scale = signals.mean(axis=0), signals.std(axis=0) + 1e-6
    x = np.c_[np.ones(len(signals)), (signals - mean) / scale]
    beta = np.zeros(x.shape[1])
    penalty = np.diag([0.0] + [l2] * (x.shape[1] - 1))
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ beta, -30, 30)))
        gradient = x.T @ (w * (y - p)) - penalty @ beta
        hessian = (x * (w * p * (1 - p))[:, None]).T @ x + penalty
        step = np.linalg.solve(hessian + 1e-9 * np.eye(len(beta)), gradient)
        beta += step
        if np.abs(step).max() < 1e-8:
            break
    return ErrorModel(mean, scale, beta[1:], float(beta[0]))

