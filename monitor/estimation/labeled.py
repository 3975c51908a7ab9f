"""Accuracy from a few labels chosen by importance sampling (active testing).

Every prediction the labeling queue considers gets an inclusion probability π_i from its
estimated chance of being wrong e_i, mixed with a uniform floor so that every prediction
can be chosen, and is chosen by its own coin (Poisson sampling: Kossen et al., ICML 2021,
sample where the errors are; the floor keeps the estimate unbiased where e_i is wrong, as
under concept drift). Over any set of considered predictions,

    errors ≈ Σ_i e_i + Σ_{i labeled} (wrong_i − e_i) / π_i

is unbiased whatever e is (a Horvitz-Thompson difference estimator): e only moves the
variance. The variance is the larger of the observed one and the one the design expects
were e right, so a handful of labels that all came back right cannot claim certainty. A
chosen prediction whose label has not come back is taken as missing at random:
the labeled ones stand for all chosen ones (π_i scaled by the share that came back).
Uniform sampling is the special case e = 0, π constant.
"""

from __future__ import annotations

import math

import numpy as np

from monitor.estimation.base import Z95, Estimate

METHOD = "importance_weighted"
UNIFORM = "uniform"


def inclusion_probabilities(p_wrong: np.ndarray, budget: float, floor: float) -> np.ndarray:
    """π_i with Σπ = ``budget`` (expected labels), proportional to √(e(1−e)) (the spread of
    wrong − e, which is what the difference estimator pays for) mixed with a uniform share
    ``floor``; probabilities above 1 are capped and their excess spread over the rest."""
    e = np.clip(np.asarray(p_wrong, dtype=float), 0.0, 1.0)
    n = len(e)
    if n == 0 or budget <= 0:
        return np.zeros(n)
    if not 0 < floor <= 1:
        raise ValueError("floor must be in (0, 1]")
    score = np.sqrt(e * (1 - e)) + 1e-9
    q = (1 - floor) * score / score.sum() + floor / n
    pi = np.zeros(n)
    free = np.ones(n, dtype=bool)
    remaining = min(float(budget), float(n))
    while free.any():
        pi[free] = remaining * q[free] / q[free].sum()
        over = free & (pi >= 1.0)
        if not over.any():
            break
        pi[over] = 1.0
        free &= ~over
        remaining = min(float(budget), float(n)) - pi[~free].sum()
    return np.clip(pi, 0.0, 1.0)


def importance_weighted_accuracy(p_wrong: np.ndarray, inclusion: np.ndarray,
                                 selected: np.ndarray, labeled: np.ndarray,
                                 wrong: np.ndarray) -> Estimate | None:
    """Accuracy over the considered predictions with a 95 % interval; None when none of
    the chosen ones has a label yet. ``wrong`` matters only where ``labeled``."""
    e = np.asarray(p_wrong, dtype=float)
    pi = np.asarray(inclusion, dtype=float)
    chosen = np.asarray(selected, dtype=bool)
    have = chosen & np.asarray(labeled, dtype=bool)
    n = len(e)
    if n == 0 or not have.any():
        return None
    response = have.sum() / chosen.sum()
    pi_have = pi[have] * response
    residual = np.asarray(wrong, dtype=float)[have] - e[have]
    errors = e.sum() + (residual / pi_have).sum()
    observed = ((1 - pi_have) * residual ** 2 / pi_have ** 2).sum() / n ** 2
    # What the design expects if e were right, over every considered prediction: a floor
    # that keeps a few labels that all came back right from claiming certainty.
    pi_all = np.clip(pi * response, 1e-9, 1.0)
    expected = ((1 - pi_all) * e * (1 - e) / pi_all).sum() / n ** 2
    variance = max(observed, expected)
    value = min(max(1.0 - errors / n, 0.0), 1.0)
    half = Z95 * math.sqrt(max(variance, 0.0))
    return Estimate(METHOD, value, max(0.0, value - half), min(1.0, value + half))


def wilson_interval(successes: float, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (sensible at 0 or 100 %); ``z`` = 1.96 for a
    two-sided 95 % interval."""
    if trials <= 0:
        raise ValueError("a proportion needs at least one trial")
    p = successes / trials
    centre = (p + z ** 2 / (2 * trials)) / (1 + z ** 2 / trials)
    half = (z * math.sqrt(p * (1 - p) / trials + z ** 2 / (4 * trials * trials))
            / (1 + z ** 2 / trials))
    return max(0.0, centre - half), min(1.0, centre + half)


def uniform_accuracy(correct: np.ndarray) -> Estimate | None:
    """Share of right answers among labeled predictions taken as a uniform sample, with a
    Wilson 95 % interval; None without labels."""
    correct = np.asarray(correct, dtype=float)
    m = len(correct)
    if m == 0:
        return None
    return Estimate(UNIFORM, float(correct.mean()), *wilson_interval(float(correct.sum()), m))
