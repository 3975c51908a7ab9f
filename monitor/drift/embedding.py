"""Embedding drift: a kernel two-sample test that is linear in the number of rows.

MMD with a Gaussian kernel, approximated by random Fourier features (Rahimi & Recht,
2007; as cosine and sine pairs): each embedding x maps to phi(x) in R^D with
E[phi(x) . phi(y)] = k(x, y), so the squared MMD is the squared distance between the two
samples' mean feature vectors. The p-value comes from a permutation test on that
statistic: permuting the pooled rows between the samples is exact under "same
distribution" for any statistic, so the false alarm rate is alpha by construction. All of
it runs in blocks of rows: time O((m + n) d D + P (m + n) D), memory O((m + n) (d + P) +
P x block): the pooled rows, one byte per row and permutation, and one block; CPU or GPU.
The feature matrix (:mod:`monitor.drift.fourier`), (m + n) x D values, is kept between
the passes while it fits in FEATURE_CACHE_BYTES (256 MB: 10k rows per side at D = 512
take 41 MB in float32, 20 MB in bfloat16). The features are multiplied in bfloat16 where
the device does that natively (:func:`product_dtype`): the products with the
permutations' 0/1 splits, most of the work, run 4-5x faster than in float32 on a CPU with
AVX512-BF16, the angles' product 6x, and the statistic stays float32's to 0.2 % (see
:class:`~monitor.drift.fourier.FeatureBlocks` for why, and why the level stays exact).

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
run. Up to WITNESS_ROWS pooled rows every window costs two passes over the features: the
first with 24 permutations, the second scoring the witness, and running the other 176
permutations in the same pass when the first 24 left the verdict open.

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
from monitor.drift.fourier import BLOCK_ROWS, FeatureBlocks, product_dtype
from monitor.drift.permutations import permuted_sides, strata_codes

# Permutations run before checking whether the verdict is already decided (a clean window
# usually is: half of all permutations exceed its statistic).
FIRST_PERMUTATIONS = 24
WITNESS_ROWS = 40_000  # rows the witness AUC is scored on, at most
LARGE_ROWS = 200_000  # pooled rows above which the test uses fewer Fourier features
BANDWIDTH_SCALES = (0.25, 0.5, 1.0, 2.0)
CENTRE_ROWS = 1000  # rows whose mean row and features centre all (see FeatureBlocks)
_SHUFFLE_STREAM = 0x766D  # keys the permutations' random stream apart from plain seeds


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
    """Median pairwise Euclidean distance of up to ``sample`` rows of ``pooled`` (the lower
    median of an even count)."""
    n = pooled.shape[0]
    idx = torch.randperm(n, generator=generator, device="cpu")[: min(sample, n)]
    distances = torch.pdist(pooled[idx.to(pooled.device)]).cpu().numpy()
    if not distances.size:
        return 1.0
    middle = (distances.size - 1) // 2
    median = float(np.partition(distances, middle)[middle])
    return median if median > 0 else 1.0


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
    dtype: torch.dtype | None = None,
) -> DriftResult:
    """Two-sample test of whether ``current`` embeddings (n, d) come from the distribution of
    ``reference`` embeddings (m, d). Returns the RFF-MMD^2 statistic, a permutation p-value
    (within ``strata``, each side's row classes, when given) and the witness AUC; drift is
    declared when p < alpha and the AUC reaches ``min_effect``. ``features`` (random
    Fourier features) defaults to 512, and to 128 above :data:`LARGE_ROWS` pooled rows,
    where the sample sizes, not the kernel's resolution, give the test its power.
    ``dtype``, the type the features are multiplied in, defaults to
    :func:`product_dtype`'s choice for ``device``."""
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
    count = max(1, features // 2)  # frequencies: each gives a cosine and a sine feature
    scales = torch.tensor(BANDWIDTH_SCALES).repeat_interleave(
        math.ceil(count / len(BANDWIDTH_SCALES)))[:count] * bandwidth
    frequencies = (torch.randn(dim, count, generator=generator) / scales).to(device)
    phi = FeatureBlocks(pooled, frequencies, dtype or product_dtype(pooled.device))

    total = m + n
    codes_np = strata_codes(m, n, strata)
    # The permutations draw from a generator of their own, so the ones a decided window
    # skips are never drawn. Its stream is keyed by a constant beside the seed: with
    # default_rng(seed + 1), a benchmark whose data came from default_rng(1) got a first
    # "random" split that followed the data's own draws (and the class of each row).
    shuffles = np.random.default_rng([seed, _SHUFFLE_STREAM])
    first = min(permutations, FIRST_PERMUTATIONS)
    # Row p of labels is True where a row is on the reference side of split p; row 0 is
    # the observed split.
    labels = torch.from_numpy(permuted_sides(m, n, first, shuffles, codes_np, observed=True))
    # Two halves of each side for the witness: their mean features come out of the first
    # pass, as extra rows beside the permutations. The halves are drawn at random, not by
    # row order: rows stored in order (a reference written class by class, clips
    # generated in sequence) would make alternate rows differ systematically.
    half = torch.zeros(total, dtype=torch.bool)
    half[torch.randperm(total, generator=generator)[: total // 2]] = True
    side = torch.arange(total) < m
    codes = torch.from_numpy(codes_np)
    groups = _witness_groups(codes, side, half)
    sizes = groups.sum(dim=1)
    phi.centre_on(torch.randperm(total, generator=generator)[:CENTRE_ROWS])

    statistics, sums, _ = _pass(phi, labels, m, n, groups=groups)
    assert statistics is not None and sums is not None
    means = sums / sizes.clamp_min(1).to(device)[:, None]
    observed = float(statistics[0])
    exceed = int((statistics[1:] >= observed).sum())
    witness, which = _witness(means, codes, half)
    # The verdict at alpha needs p = (1 + exceed) / (permutations + 1) < alpha, and the
    # effect. When the first permutations already exceed the observed statistic often
    # enough, or the effect is too small, no further permutation can make it drift: the
    # rest are skipped, and the p-value is that of the permutations run (the verdict is
    # the one all of them would give).
    undecided = exceed < math.ceil(alpha * (permutations + 1) - 1) and permutations > first

    def remaining() -> torch.Tensor:
        return torch.from_numpy(permuted_sides(m, n, permutations - first, shuffles,
                                                codes_np))

    rest: torch.Tensor | None = None
    if total <= WITNESS_ROWS:
        # The witness scores every row, so one more pass over the features does it, and
        # the remaining permutations in the same pass when the first left the verdict
        # open (also when the effect then falls short: one pass is cheaper than two).
        scored: torch.Tensor | slice = slice(0, total)
        rest, _, scores = _pass(phi, remaining() if undecided else None, m, n,
                                witness=(witness, which))
        assert scores is not None
        effect = _witness_auc(scores, sizes, codes, side, half)
    else:
        # The witness is fitted on every row (its group means came with the first pass)
        # and scored on a random subset: the AUC of 40,000 rows is within about 0.003.
        scored = torch.randperm(total, generator=generator)[:WITNESS_ROWS].sort().values
        scores = _subset_scores(phi, scored, witness, which[scored])
        effect = _witness_auc(scores, sizes, codes[scored], side[scored], half[scored])
        if undecided and effect >= min_effect:
            rest = _pass(phi, remaining(), m, n)[0]
    run = first
    if rest is not None:
        exceed += int((rest >= observed).sum())
        run = permutations
    # The observed split counts as one of the permutations (Phipson & Smyth, 2010), so the
    # p-value is never 0 and the test keeps its level exactly.
    p_value = (1 + exceed) / (run + 1)
    drifted = p_value < alpha and effect >= min_effect
    return DriftResult("mmd_rff_permutation", observed, p_value, alpha, bool(drifted), m, n,
                       effect, "witness_auc", min_effect, run)


def _pass(phi: FeatureBlocks, labels: torch.Tensor | None, m: int, n: int, *,
          groups: torch.Tensor | None = None,
          witness: tuple[torch.Tensor, torch.Tensor] | None = None,
          ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """One pass over the pooled rows' feature blocks, for what is asked: each split's
    RFF-MMD^2 (row p of ``labels``: True on the reference side), the feature sums of the
    row ``groups`` (0/1 rows), and every row's ``witness`` score (witness matrix, each
    row's witness). Each split's mean difference is (sum over its reference rows)/m - (sum
    over the rest)/n = R (1/m + 1/n) - A/n, where R, the sum over its reference rows,
    accumulates block by block as a product with the 0/1 labels, and A is the sum over
    all rows. Labels, groups and a row of ones (for A) are one matrix, in the features'
    type (0/1 is exact in bfloat16), so each block takes one product for them; the
    blocks' products add up in float32."""
    device, dtype = phi.pooled.device, phi.dtype
    splits = 0 if labels is None else labels.shape[0]
    extra = 0 if groups is None else groups.shape[0]
    sums = (torch.zeros(splits + extra + 1, phi.width, device=device)
            if splits or extra else None)
    groups = None if groups is None else groups.to(device, dtype)
    scores = torch.empty(phi.total) if witness is not None else None
    for rows, block in phi.blocks():
        if sums is not None:
            # bool to a float type takes a slow path (8 ms for 177 x 2048 into bfloat16);
            # the same bytes as uint8 convert in 0.03 ms
            parts = [] if labels is None else [
                labels[:, rows].view(torch.uint8).to(device, non_blocking=True).to(dtype)]
            if groups is not None:
                parts.append(groups[:, rows])
            parts.append(torch.ones(1, rows.stop - rows.start, device=device, dtype=dtype))
            sums += torch.mm(torch.cat(parts), block)
        if scores is not None and witness is not None:
            scores[rows] = _score(block, witness[0], witness[1][rows])
    statistics = group_sums = None
    if sums is not None:
        column_sums = sums[-1]
        if splits:
            differences = sums[:splits] * (1.0 / m + 1.0 / n) - column_sums / n
            statistics = (differences**2).sum(dim=1).cpu() * phi.scale**2
        if groups is not None:
            group_sums = sums[splits:-1]
    return statistics, group_sums, scores


def _witness_groups(codes: torch.Tensor, side: torch.Tensor, half: torch.Tensor
                    ) -> torch.Tensor:
    """(4 C, rows) indicators of each stratum's reference even, reference odd, current even
    and current odd rows."""
    strata = codes[None, :] == torch.arange(int(codes.max()) + 1)[:, None]
    return torch.stack([strata & side & ~half, strata & side & half,
                        strata & ~side & ~half, strata & ~side & half], dim=1
                       ).reshape(-1, codes.shape[0]).float()


def _witness(means: torch.Tensor, codes: torch.Tensor, half: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The witness functions and which one scores each pooled row. Each stratum has its
    own witness, so a class mix that differs between halves (a class-balanced reference
    split in two has anticorrelated halves) cannot pose as an effect; a row is scored by
    the witness fitted on the other half. ``means`` holds each stratum's groups as
    :func:`_witness_groups` orders them. Returns the (2 C, D) witness matrix, row
    h * C + c being stratum c's witness for the rows of half h, and each row's index."""
    strata = int(codes.max()) + 1
    means = means.reshape(strata, 4, -1)
    witness = torch.cat([means[:, 3] - means[:, 1], means[:, 2] - means[:, 0]])
    return witness, half.long() * strata + codes


def _score(block: torch.Tensor, witness: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Witness scores of a block of feature rows: every witness for every row in one
    product (in float32: the scores are what the effect size ranks), then each row's
    own."""
    return (block.to(witness.dtype) @ witness.T).cpu().gather(1, which[:, None]).squeeze(1)


def _subset_scores(phi: FeatureBlocks, rows: torch.Tensor, witness: torch.Tensor,
                   which: torch.Tensor) -> torch.Tensor:
    """Witness scores of some pooled rows (indices), with their witnesses ``which``."""
    scores = torch.empty(len(rows))
    for start in range(0, len(rows), BLOCK_ROWS):
        part = slice(start, start + BLOCK_ROWS)
        scores[part] = _score(phi.of(rows[part]), witness, which[part])
    return scores


def _witness_auc(scores: torch.Tensor, sizes: torch.Tensor, codes: torch.Tensor,
                 side: torch.Tensor, half: torch.Tensor) -> float:
    """AUC of the witness fitted on one half of each sample and scored on the other half,
    both ways round, over pairs of rows of the same stratum. ``scores`` are the scored
    rows' witness scores, with their ``codes``, ``side`` and ``half``; ``sizes`` each
    stratum's group sizes as :func:`_witness_groups` orders them. NaN when no stratum has
    rows of both samples in both halves."""
    strata = len(sizes) // 4  # not codes.max() + 1: a subset may miss the last stratum
    sizes = sizes.reshape(strata, 4)
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


@dataclass(frozen=True)
class EmbeddingDrift:
    """Embedding drift asked two ways, each at half the level: ``within`` predicted
    classes (permutations keep each side's class mix: did clips move inside their class?)
    and ``pooled`` (did the embeddings move at all?). A shift that carries clips across
    classes (2x playback speed: a steady clip now looks like a moving one) leaves every
    class's embeddings where that class's were, so only the pooled test sees it; a shift
    inside classes under a changing class mix is what the stratified test is for."""

    within: DriftResult
    pooled: DriftResult
    alpha: float

    def combined(self) -> DriftResult:
        """One result: drift when either test found it at its half of ``alpha``; the
        p-value is Bonferroni's, 2 x the smaller one, against ``alpha``; the effect is the
        effect of the test with the smaller p-value."""
        first = min((self.within, self.pooled), key=lambda r: r.p_value)
        return DriftResult(
            "mmd_rff_permutation_within_and_pooled", first.statistic,
            min(1.0, 2 * first.p_value), self.alpha,
            bool(self.within.drifted or self.pooled.drifted), first.reference_rows,
            first.current_rows, first.effect, first.effect_method, first.min_effect,
            (self.within.permutations or 0) + (self.pooled.permutations or 0))


def embedding_drift_within_and_pooled(
    reference: np.ndarray | torch.Tensor, current: np.ndarray | torch.Tensor, *,
    strata: tuple[np.ndarray, np.ndarray], alpha: float = 0.05, min_effect: float = MIN_AUC,
    seed: int = 0, device: str | torch.device = "cpu",
) -> EmbeddingDrift:
    """:func:`embedding_drift` within ``strata`` and pooled, each at ``alpha`` / 2."""
    level = alpha / 2
    return EmbeddingDrift(
        embedding_drift(reference, current, alpha=level, min_effect=min_effect, seed=seed,
                        device=device, strata=strata),
        embedding_drift(reference, current, alpha=level, min_effect=min_effect, seed=seed,
                        device=device),
        alpha)
