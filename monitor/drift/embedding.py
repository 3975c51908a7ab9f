"""Embedding drift: a kernel two-sample test that is linear in the number of rows.

MMD with a Gaussian kernel, approximated by random Fourier features (Rahimi & Recht,
2007): each embedding x maps to phi(x) in R^D with E[phi(x) . phi(y)] = k(x, y), so the
squared MMD is the squared distance between the two samples' mean feature vectors.
The p-value comes from a permutation test on that statistic: permuting the pooled rows
between the samples is exact under "same distribution" for any statistic, so the false
alarm rate is alpha by construction. The permutations reuse one feature matrix, and all
of it runs in blocks: time O((m + n) d D + P (m + n) D), memory O((m + n) (d + P) + P x
block): the pooled rows, one byte per row and permutation, and one block; CPU or GPU. The
feature matrix itself, (m + n) x D floats, is kept between the passes while it fits in
FEATURE_CACHE_BYTES (256 MB: 10k rows per side at D = 512 take 41 MB).

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

The permutations stop early when the verdict is decided: after the first 24, a window
whose statistic they already exceeded often enough (or whose effect is below the minimum)
cannot become drift, so the rest are skipped and the p-value is that of the permutations
run. A clean window, the usual case, costs two passes over the rows and a small product.

The effect size is the AUC of the MMD witness function: the direction mean_cur - mean_ref
in feature space, fitted on one half of each sample and scored on the other half (and the
other way round), so it is 0.5 when nothing moved whatever the sample sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from monitor.drift.effect import MIN_AUC, auc

_BLOCK = 16_384
# Permutations run before checking whether the verdict is already decided (a clean window
# usually is: half of all permutations exceed its statistic).
FIRST_PERMUTATIONS = 24
WITNESS_ROWS = 40_000  # rows the witness AUC is scored on, at most
# Pooled rows x features up to this many bytes keep their feature matrix between the passes
# (first permutations, witness, remaining permutations) instead of computing it again.
FEATURE_CACHE_BYTES = 256 * 1024 * 1024
LARGE_ROWS = 200_000  # pooled rows above which the test uses fewer Fourier features
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
    permutations: int | None = None  # run: fewer than asked when the verdict was decided


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
    """phi(x) = sqrt(2 / D) cos(W x + b), for rows in one block (one product with the
    offsets added in it, then in place: one matrix of the block's size, not three)."""
    return torch.addmm(offsets, rows, weights).cos_().mul_(math.sqrt(2.0 / weights.shape[1]))


def embedding_drift(
    reference: np.ndarray | torch.Tensor,
    current: np.ndarray | torch.Tensor,
    *,
    alpha: float = 0.05,
    features: int | None = None,
    permutations: int = 200,
    seed: int = 0,
    device: str | torch.device = "cpu",
    strata: tuple[np.ndarray, np.ndarray] | None = None,
    min_effect: float = MIN_AUC,
) -> DriftResult:
    """Two-sample test of whether ``current`` embeddings (n, d) come from the distribution of
    ``reference`` embeddings (m, d). Returns the RFF-MMD^2 statistic, a permutation p-value
    (within ``strata``, each side's row classes, when given) and the witness AUC; drift is
    declared when p < alpha and the AUC reaches ``min_effect``. ``features`` (random
    Fourier features) defaults to 512, and to 128 above :data:`LARGE_ROWS` pooled rows,
    where the sample sizes, not the kernel's resolution, give the test its power."""
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
    features = features or (512 if m + n <= LARGE_ROWS else 128)
    bandwidth = median_bandwidth(pooled, generator)
    dim = x.shape[1]
    # A mixture of Gaussian kernels at several scales around the median distance: the
    # median alone is set by the spread between classes and misses shifts within them.
    scales = torch.tensor(BANDWIDTH_SCALES).repeat_interleave(
        math.ceil(features / len(BANDWIDTH_SCALES)))[:features] * bandwidth
    weights = (torch.randn(dim, features, generator=generator) / scales).to(device)
    offsets = (torch.rand(features, generator=generator) * 2 * math.pi).to(device)

    # Row i goes to the reference side of permutation p when labels[p, i] is True; row 0 of
    # labels is the observed split.
    total = m + n
    # The permutations draw from a generator of their own, so the ones a decided window
    # skips are never drawn.
    shuffles = torch.Generator(device="cpu").manual_seed(seed + 1)
    first = min(permutations, FIRST_PERMUTATIONS)
    labels = _permuted_sides(m, n, first, shuffles, strata, observed=True).to(device)
    # Two halves of each side (alternate rows) for the witness: their mean features come
    # out of the first pass, as four extra rows beside the permutations.
    # The witness's halves are drawn at random, not by row order: rows stored in order
    # (a reference written class by class, clips generated in sequence) would make
    # alternate rows differ systematically.
    half = torch.zeros(total, dtype=torch.bool)
    half[torch.randperm(total, generator=generator)[: total // 2]] = True
    side = torch.arange(total) < m
    codes = torch.from_numpy(_strata_codes(m, n, strata))
    groups = _witness_groups(codes, side, half)
    sizes = groups.sum(dim=1)
    groups = (groups / sizes.clamp_min(1)[:, None]).to(device)
    cached = (_fourier_features(pooled, weights, offsets)
              if total * features * 4 <= FEATURE_CACHE_BYTES else None)

    def block(rows: torch.Tensor | slice) -> torch.Tensor:
        """Features of some pooled rows: from the cache, or computed."""
        if cached is not None:
            return cached[rows]
        return _fourier_features(pooled[rows], weights, offsets)

    statistics, means = _statistics(block, total, labels, m, n, groups)
    # The witness is fitted on every row (its group means came with the first pass) and
    # scored on a random subset: the AUC of 40,000 rows is within about 0.003.
    if total <= WITNESS_ROWS:
        scored: torch.Tensor | slice = slice(0, total)
    else:
        scored = torch.randperm(total, generator=generator)[:WITNESS_ROWS].sort().values
    effect = _witness_auc(block, scored, means, sizes, codes[scored], side[scored],
                          half[scored])
    observed = float(statistics[0])
    exceed = int((statistics[1:] >= observed).sum())
    # The verdict at alpha needs p = (1 + exceed) / (permutations + 1) < alpha, and the
    # effect. When the first permutations already exceed the observed statistic often
    # enough, or the effect is too small, no further permutation can make it drift: stop
    # there, reporting the p-value of the permutations run (the verdict is the one all of
    # them would give).
    decided = exceed >= math.ceil(alpha * (permutations + 1) - 1) or effect < min_effect
    run = first
    if not decided and permutations > first:
        rest, _ = _statistics(block, total, _permuted_sides(
            m, n, permutations - first, shuffles, strata).to(device), m, n)
        exceed += int((rest >= observed).sum())
        run = permutations
    # The observed split counts as one of the permutations (Phipson & Smyth, 2010), so the
    # p-value is never 0 and the test keeps its level exactly.
    p_value = (1 + exceed) / (run + 1)
    drifted = p_value < alpha and effect >= min_effect
    return DriftResult("mmd_rff_permutation", observed, p_value, alpha, bool(drifted), m, n,
                       effect, "witness_auc", min_effect, run)


def _statistics(features_of: Callable[[slice], torch.Tensor], total: int,
                labels: torch.Tensor, m: int, n: int, groups: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each split's RFF-MMD^2 (row p of ``labels``: True on the reference side), from one
    blocked pass over the ``total`` pooled rows' features; with ``groups``, also those row
    groups' mean features. Each split's mean difference is (sum over its reference
    rows)/m - (sum over the rest)/n = R (1/m + 1/n) - A/n, where R, the sum over its
    reference rows, accumulates block by block as a product with the 0/1 labels, and A is
    the sum over all rows."""
    reference_sums = column_sums = means = None
    for start in range(0, total, _BLOCK):
        block = features_of(slice(start, start + _BLOCK))
        if reference_sums is None:
            reference_sums = torch.zeros(labels.shape[0], block.shape[1], device=block.device)
            column_sums = torch.zeros(block.shape[1], device=block.device)
            if groups is not None:
                means = torch.zeros(groups.shape[0], block.shape[1], device=block.device)
        reference_sums += labels[:, start : start + _BLOCK].float() @ block
        column_sums += block.sum(dim=0)
        if means is not None and groups is not None:
            means += groups[:, start : start + _BLOCK] @ block
    assert reference_sums is not None and column_sums is not None
    differences = reference_sums * (1.0 / m + 1.0 / n) - column_sums / n
    return (differences**2).sum(dim=1).cpu(), means


def _strata_codes(m: int, n: int, strata: tuple[np.ndarray, np.ndarray] | None
                  ) -> np.ndarray:
    """Each pooled row's stratum as 0..C-1 (all 0 without strata)."""
    if strata is None:
        return np.zeros(m + n, dtype=np.int64)
    ref_strata, cur_strata = (np.asarray(s) for s in strata)
    if len(ref_strata) != m or len(cur_strata) != n:
        raise ValueError(f"strata of {len(ref_strata)} and {len(cur_strata)} rows for samples "
                         f"of {m} and {n}")
    _, codes = np.unique(np.concatenate([ref_strata, cur_strata]).astype(str),
                         return_inverse=True)
    return codes.astype(np.int64)


def _witness_groups(codes: torch.Tensor, side: torch.Tensor, half: torch.Tensor
                    ) -> torch.Tensor:
    """(4 C, rows) indicators of each stratum's reference even, reference odd, current even
    and current odd rows."""
    strata = codes[None, :] == torch.arange(int(codes.max()) + 1)[:, None]
    return torch.stack([strata & side & ~half, strata & side & half,
                        strata & ~side & ~half, strata & ~side & half], dim=1
                       ).reshape(-1, codes.shape[0]).float()


def _permuted_sides(m: int, n: int, permutations: int, generator: torch.Generator,
                    strata: tuple[np.ndarray, np.ndarray] | None, observed: bool = False
                    ) -> torch.Tensor:
    """(permutations, m + n) booleans, True where a row is on the reference side of a
    random split; with ``observed``, the observed split comes first as an extra row. With
    ``strata`` each class keeps its reference count."""
    total = m + n
    labels = torch.zeros(permutations + observed, total, dtype=torch.bool)
    if observed:
        labels[0, :m] = True
    codes = _strata_codes(m, n, strata)
    for code in np.unique(codes):
        rows = torch.from_numpy(np.flatnonzero(codes == code))
        on_reference = int((rows < m).sum())
        for p in range(observed, permutations + observed):
            labels[p].index_fill_(
                0, rows[torch.randperm(len(rows), generator=generator)[:on_reference]], True)
    return labels


def _part(rows: torch.Tensor | slice, start: int, stop: int) -> torch.Tensor | slice:
    """Rows ``start:stop`` of a selection of rows (indices, or a slice of the pooled
    rows)."""
    if isinstance(rows, slice):
        return slice(rows.start + start, min(rows.start + stop, rows.stop))
    return rows[start:stop]


def _witness_auc(features_of: Callable[[torch.Tensor | slice], torch.Tensor],
                 rows: torch.Tensor | slice,
                 means: torch.Tensor, sizes: torch.Tensor, codes: torch.Tensor,
                 side: torch.Tensor, half: torch.Tensor) -> float:
    """AUC of the witness fitted on one half of each sample and scored on the other half,
    both ways round, over pairs of rows of the same stratum: each stratum has its own
    witness, so a class mix that differs between halves (a class-balanced reference split
    in two has anticorrelated halves) cannot pose as an effect. ``means`` and ``sizes``
    hold each stratum's groups as :func:`_witness_groups` orders them; ``rows`` are the
    pooled rows scored (``features_of`` gives their features), with their ``codes``,
    ``side`` and ``half``. NaN when no stratum has rows of both samples in both halves."""
    strata = int(codes.max()) + 1
    means, sizes = means.reshape(strata, 4, -1), sizes.reshape(strata, 4)
    # Even rows are scored by the witness of the odd halves, odd rows by the even one.
    # (2 C, D): row h * C + c is stratum c's witness for the rows of half h.
    witness = torch.cat([means[:, 3] - means[:, 1], means[:, 2] - means[:, 0]])
    count = len(codes)
    which = half.long() * strata + codes  # each scored row's witness
    scores = torch.empty(count)
    for start in range(0, count, _BLOCK):
        block = features_of(_part(rows, start, start + _BLOCK))
        # Every witness for every row in one product, then each row's own: (block, 2 C).
        all_scores = (block @ witness.T.to(block.device)).cpu()
        scores[start : start + _BLOCK] = all_scores.gather(
            1, which[start : start + _BLOCK, None]).squeeze(1)
    total, pairs = 0.0, 0
    for odd, fitted_on in ((False, (1, 3)), (True, (0, 2))):
        for c in range(strata):
            if (sizes[c, list(fitted_on)] == 0).any():
                continue
            chosen = (half == odd) & (codes == c)
            negatives, positives = scores[side & chosen], scores[~side & chosen]
            if len(negatives) and len(positives):
                weight = len(negatives) * len(positives)
                total += auc(negatives, positives) * weight
                pairs += weight
    return total / pairs if pairs else float("nan")
