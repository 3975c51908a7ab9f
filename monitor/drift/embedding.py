"""Embedding drift: a kernel two-sample test that is linear in the number of rows.

MMD with a Gaussian kernel, approximated by random Fourier features (Rahimi & Recht,
2007): each embedding x maps to phi(x) in R^D with E[phi(x) . phi(y)] = k(x, y), so the
squared MMD is the squared distance between the two samples' mean feature vectors.
The p-value comes from a permutation test on that statistic: permuting the pooled rows
between the samples is exact under "same distribution" for any statistic, so the false
alarm rate is alpha by construction. The permutations reuse one feature matrix, and all
of it runs in blocks: time O((m + n) d D + P (m + n) D), memory O((m + n) (d + P) + P x
block): the pooled rows, one byte per row and permutation, and one block; CPU or GPU.

The kernel is a mixture of Gaussians with bandwidths 0.25x to 2x the median pairwise
distance of a subsample of the pooled data (the median heuristic alone is dominated by the
distance between classes); the permutation test keeps its level whatever the kernel.

With ``strata`` (each row's predicted class), rows are permuted only within their class,
so every permutation keeps both sides' class mix. That matters when the reference is
class-balanced and a window is not: unrestricted permutations give the reference side a
random class mix the observed split never has, the null statistics come out too large and
the test is conservative (clean p-values averaged 0.73 instead of 0.5). The stratified
test asks whether embeddings moved *within* classes; a change of class mix is the
prior-shift test's question.

The effect size is the AUC of the MMD witness function: the direction mean_cur - mean_ref
in feature space, fitted on one half of each sample and scored on the other half (and the
other way round), so it is 0.5 when nothing moved whatever the sample sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from monitor.drift.effect import MIN_AUC, auc

_BLOCK = 16_384
BANDWIDTH_SCALES = (0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class DriftResult:
    """Outcome of a two-sample drift test: drift needs ``p_value < alpha`` and, when the
    test has an effect size, ``effect >= min_effect``."""

    method: str
    statistic: float
    p_value: float
    alpha: float
    drifted: bool
    reference_rows: int
    current_rows: int
    effect: float | None = None
    effect_method: str | None = None
    min_effect: float | None = None


def median_bandwidth(pooled: torch.Tensor, generator: torch.Generator, sample: int = 1000) -> float:
    """Median pairwise Euclidean distance of up to ``sample`` rows of ``pooled``."""
    n = pooled.shape[0]
    idx = torch.randperm(n, generator=generator, device="cpu")[: min(sample, n)]
    subset = pooled[idx.to(pooled.device)]
    distances = torch.cdist(subset, subset)
    upper = distances[torch.triu(torch.ones_like(distances, dtype=torch.bool), diagonal=1)]
    median = float(upper.median()) if upper.numel() else 1.0
    return median if median > 0 else 1.0


def _fourier_features(
    rows: torch.Tensor, weights: torch.Tensor, offsets: torch.Tensor
) -> torch.Tensor:
    """phi(x) = sqrt(2 / D) cos(W x + b), for rows in one block."""
    return math.sqrt(2.0 / weights.shape[1]) * torch.cos(rows @ weights + offsets)


def embedding_drift(
    reference: np.ndarray | torch.Tensor,
    current: np.ndarray | torch.Tensor,
    *,
    alpha: float = 0.05,
    features: int = 512,
    permutations: int = 200,
    seed: int = 0,
    device: str | torch.device = "cpu",
    strata: tuple[np.ndarray, np.ndarray] | None = None,
    min_effect: float = MIN_AUC,
) -> DriftResult:
    """Two-sample test of whether ``current`` embeddings (n, d) come from the distribution of
    ``reference`` embeddings (m, d). Returns the RFF-MMD^2 statistic, a permutation p-value
    (within ``strata``, each side's row classes, when given) and the witness AUC; drift is
    declared when p < alpha and the AUC reaches ``min_effect``."""
    x = torch.as_tensor(reference, dtype=torch.float32, device=device)
    y = torch.as_tensor(current, dtype=torch.float32, device=device)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected two (rows, dim) matrices of one width, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError("each sample needs at least two rows")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    pooled = torch.cat([x, y])
    bandwidth = median_bandwidth(pooled, generator)
    dim = x.shape[1]
    # A mixture of Gaussian kernels at several scales around the median distance: the
    # median alone is set by the spread between classes and misses shifts within them.
    scales = torch.tensor(BANDWIDTH_SCALES).repeat_interleave(
        math.ceil(features / len(BANDWIDTH_SCALES)))[:features] * bandwidth
    weights = (torch.randn(dim, features, generator=generator) / scales).to(device)
    offsets = (torch.rand(features, generator=generator) * 2 * math.pi).to(device)

    # Row i goes to the reference side of permutation p when labels[p, i] is True; row 0 of
    # labels is the observed split. Each permutation's mean difference is accumulated
    # block by block as (sum over its reference rows)/m - (sum over the rest)/n.
    total = m + n
    labels = _permuted_sides(m, n, permutations, generator, strata).to(device)
    # Two halves of each side (alternate rows) for the witness: their mean features come
    # out of the same pass as the permutations' differences, as four extra rows.
    half = torch.arange(total) % 2 == 1
    side = torch.arange(total) < m
    groups = torch.stack([side & ~half, side & half, ~side & ~half, ~side & half]).float()
    groups = (groups / groups.sum(dim=1, keepdim=True).clamp_min(1)).to(device)
    differences = torch.zeros(permutations + 1, features, device=device)
    means = torch.zeros(4, features, device=device)
    for start in range(0, total, _BLOCK):
        block = _fourier_features(pooled[start : start + _BLOCK], weights, offsets)
        coefficients = torch.where(labels[:, start : start + _BLOCK], 1.0 / m, -1.0 / n)
        differences += coefficients @ block
        means += groups[:, start : start + _BLOCK] @ block
    statistics = (differences**2).sum(dim=1).cpu()
    observed = float(statistics[0])
    # The observed split counts as one of the permutations (Phipson & Smyth, 2010), so the
    # p-value is never 0 and the test keeps its level exactly.
    p_value = float((1 + (statistics[1:] >= observed).sum()) / (permutations + 1))
    effect = _witness_auc(pooled, weights, offsets, means, side, half)
    drifted = p_value < alpha and effect >= min_effect
    return DriftResult("mmd_rff_permutation", observed, p_value, alpha, bool(drifted), m, n,
                       effect, "witness_auc", min_effect)


def _permuted_sides(m: int, n: int, permutations: int, generator: torch.Generator,
                    strata: tuple[np.ndarray, np.ndarray] | None) -> torch.Tensor:
    """(permutations + 1, m + n) booleans, True where a row is on the reference side; row 0
    is the observed split. With ``strata`` each class keeps its reference count."""
    total = m + n
    labels = torch.zeros(permutations + 1, total, dtype=torch.bool)
    labels[0, :m] = True
    if strata is None:
        for p in range(1, permutations + 1):
            labels[p, torch.randperm(total, generator=generator)[:m]] = True
        return labels
    ref_strata, cur_strata = (np.asarray(s) for s in strata)
    if len(ref_strata) != m or len(cur_strata) != n:
        raise ValueError(f"strata of {len(ref_strata)} and {len(cur_strata)} rows for samples "
                         f"of {m} and {n}")
    _, codes = np.unique(np.concatenate([ref_strata, cur_strata]).astype(str),
                         return_inverse=True)
    for code in np.unique(codes):
        rows = torch.from_numpy(np.flatnonzero(codes == code))
        on_reference = int((rows < m).sum())
        for p in range(1, permutations + 1):
            labels[p, rows[torch.randperm(len(rows), generator=generator)[:on_reference]]] = True
    return labels


def _witness_auc(pooled: torch.Tensor, weights: torch.Tensor, offsets: torch.Tensor,
                 means: torch.Tensor, side: torch.Tensor, half: torch.Tensor) -> float:
    """AUC of the witness fitted on one half of each sample and scored on the other half,
    averaged over both ways round. ``means`` holds the halves' mean features in the order
    reference even, reference odd, current even, current odd."""
    # Even rows are scored by the witness of the odd halves and odd rows by the even one.
    witness = torch.stack([means[3] - means[1], means[2] - means[0]])
    scores = torch.empty(pooled.shape[0], device=pooled.device)
    for start in range(0, pooled.shape[0], _BLOCK):
        block = _fourier_features(pooled[start : start + _BLOCK], weights, offsets)
        which = half[start : start + _BLOCK].long().to(pooled.device)
        scores[start : start + _BLOCK] = (block * witness[which]).sum(dim=1)
    scores = scores.cpu()
    folds = [auc(scores[side & (half == odd)], scores[~side & (half == odd)])
             for odd in (False, True)]
    return float(np.mean(folds))
