"""Embedding drift: a kernel two-sample test that is linear in the number of rows.

MMD with a Gaussian kernel, approximated by random Fourier features (Rahimi & Recht,
2007; as cosine and sine pairs): each embedding x maps to phi(x) in R^D with
E[phi(x) . phi(y)] = k(x, y), so the squared MMD is the squared distance between the two
samples' mean feature vectors. The p-value comes from a permutation test on that
statistic: permuting the pooled rows between the samples is exact under "same
distribution" for any statistic, so the false alarm rate is alpha by construction. All of
it runs in blocks of rows: time O((m + n) d D + P (m + n) D), memory O((m + n) (d + P) +
P x block): the pooled rows, one byte per row and permutation, and one block; CPU or GPU.
The feature matrix, (m + n) x D values, is kept between the passes while it fits in
FEATURE_CACHE_BYTES (256 MB: 10k rows per side at D = 512 take 41 MB in float32, 20 MB in
bfloat16). The features are multiplied in bfloat16 where the device does that natively
(:func:`product_dtype`): the products with the permutations' 0/1 splits, most of the
work, run 4-5x faster than in float32 on a CPU with AVX512-BF16, the angles' product 6x,
and the statistic stays float32's to 0.2 % (see :class:`_FeatureBlocks` for why, and why
the level stays exact).

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
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from monitor.drift.effect import MIN_AUC, auc
from monitor.drift.permutations import permuted_sides, strata_codes

_BLOCK = 2048
# Permutations run before checking whether the verdict is already decided (a clean window
# usually is: half of all permutations exceed its statistic).
FIRST_PERMUTATIONS = 24
WITNESS_ROWS = 40_000  # rows the witness AUC is scored on, at most
# Pooled rows x features up to this many bytes keep their feature matrix between the passes
# (first permutations, then witness and remaining permutations) instead of computing it again.
FEATURE_CACHE_BYTES = 256 * 1024 * 1024
LARGE_ROWS = 200_000  # pooled rows above which the test uses fewer Fourier features
BANDWIDTH_SCALES = (0.25, 0.5, 1.0, 2.0)
CENTRE_ROWS = 1000  # rows whose mean features centre all features (see _FeatureBlocks)
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


class _FeatureBlocks:
    """The pooled rows' random Fourier features, block by block:
    phi(x) = sqrt(1 / F) [cos(W (x - o)), sin(W (x - o))] - c for F frequencies (the
    columns of W), so phi(x) . phi(y) = mean over the frequencies of cos(w . (x - y)),
    which averages to the kernel, up to the constant c. Against the one-cosine form
    sqrt(2 / D) cos(W x + b), the pair gives the same number of features from half the
    frequencies (half the product) and a lower variance for Gaussian kernels (Sutherland &
    Schneider, 2015). The blocks hold the features unscaled; :func:`_pass` applies the
    scale's square to the statistics (the p-value and the witness AUC do not depend on it).

    o and c, the mean row and the mean feature vector of a random subsample
    (:meth:`centre_on`), change no kernel value and no mean difference, and so no
    statistic: the pair's inner product depends on x - y only. They are what lets the
    work run in bfloat16 (``dtype``). o keeps the angles W (x - o) small (a few radians,
    not tens), so their product runs in bfloat16 too; its result is rounded to 8 bits of
    mantissa (the CPU's bf16 product has no float32 output): 0.2 % of an angle, a few
    thousandths of a radian for most. c keeps the sums the passes accumulate near zero, which is what lets the
    features and the 0/1 splits be multiplied in bfloat16: rounded sums are harmless near
    zero and would not be near m times the mean feature. Each block's sums are added in
    float32. Rounding is a fixed function of the rows, applied alike to the observed split
    and to every permutation, so the permutation test keeps its level exactly; against
    float32 throughout, over 46 windows of 500 and 10,000 rows per side, the statistic
    moved by at most 0.2 % (0.1 % with float32 angles), the p-value by at most one
    permutation, the effect by at most 0.0003, and no verdict changed.

    Each block is computed into memory that is written once and reused: a matrix of all
    rows' features when it fits :data:`FEATURE_CACHE_BYTES` (filled on the first pass,
    read on the later ones), otherwise one block-sized buffer, refilled on every pass. A
    block of :data:`_BLOCK` rows stays in the processor's cache between its product, its
    cosine and the products that consume it. Fresh memory is not free: its first write
    is page faults, and the cache is allocated by torch, not numpy: numpy asks the kernel
    for huge pages on large arrays (madvise), which under the common THP setting
    ``defrag=madvise`` compacts memory on the fault: 41 MB took 48 ms to fill from numpy
    and 8.5 ms from torch on a 2-core VM. In bfloat16 the cache is half the size."""

    def __init__(self, pooled: torch.Tensor, frequencies: torch.Tensor,
                 dtype: torch.dtype) -> None:
        self.pooled, self.dtype = pooled, dtype
        self.frequencies = frequencies.to(dtype)
        self.total, count = pooled.shape[0], frequencies.shape[1]
        self.width = 2 * count
        self.scale = math.sqrt(1.0 / count)
        device = pooled.device
        self.origin = torch.zeros(pooled.shape[1], device=device)
        self.centre = torch.zeros(2, count, device=device)
        itemsize = torch.empty((), dtype=dtype).element_size()
        fits = self.total * self.width * itemsize <= FEATURE_CACHE_BYTES
        self.cache = (torch.empty(self.total, self.width, device=device, dtype=dtype)
                      if fits else None)
        self.filled = False
        block = min(_BLOCK, self.total)
        self.buffer = None if fits else torch.empty(block, self.width, device=device,
                                                    dtype=dtype)
        self.rows = torch.empty(block, pooled.shape[1], device=device, dtype=dtype)
        self.products = torch.empty(block, count, device=device, dtype=dtype)
        # float32 angles for the wave functions, when the product gives another type
        self.angles = (None if dtype == torch.float32
                       else torch.empty(block, count, device=device))
        self.waves = torch.empty(block, count, device=device)

    def centre_on(self, rows: torch.Tensor) -> None:
        """Make the origin o the mean of ``rows`` (indices of pooled rows) and c their mean
        features; before any pass."""
        assert not self.filled
        device = self.pooled.device
        self.origin = self.pooled[rows.to(device)].mean(dim=0)
        total = torch.zeros(self.width, device=device)
        for start in range(0, len(rows), _BLOCK):
            part = self.pooled[rows[start:start + _BLOCK].to(device)]
            out = torch.empty(part.shape[0], self.width, device=device)
            total += self.compute(part, out).sum(dim=0)
        self.centre = (total / max(len(rows), 1)).reshape(2, -1)

    def compute(self, rows: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Unscaled features of ``rows`` (at most a block of embeddings) into ``out``:
        cos(W (x - o)) - c_cos and sin(W (x - o)) - c_sin; the statistics take the scale."""
        size = rows.shape[0]
        centred = torch.sub(rows, self.origin, out=self.rows[:size])
        products = torch.mm(centred, self.frequencies, out=self.products[:size])
        # The wave functions in float32 scratch from float32 angles (from bfloat16 ones
        # they take a slow path, 2.5x), then one copy into each half of ``out``, rounding
        # to its type on the way.
        angles = products if self.angles is None else self.angles[:size].copy_(products)
        waves = self.waves[:size]
        out[:, :waves.shape[1]].copy_(torch.cos(angles, out=waves).sub_(self.centre[0]))
        out[:, waves.shape[1]:].copy_(torch.sin(angles, out=waves).sub_(self.centre[1]))
        return out

    def blocks(self) -> Iterator[tuple[slice, torch.Tensor]]:
        """(rows, their features) for every block of pooled rows, in order. A block is
        valid until the next one is asked for."""
        for start in range(0, self.total, _BLOCK):
            rows = slice(start, min(start + _BLOCK, self.total))
            if self.cache is not None:
                if not self.filled:
                    self.compute(self.pooled[rows], self.cache[rows])
                yield rows, self.cache[rows]
            else:
                assert self.buffer is not None
                yield rows, self.compute(self.pooled[rows],
                                         self.buffer[: rows.stop - rows.start])
        self.filled = self.cache is not None

    def of(self, rows: torch.Tensor) -> torch.Tensor:
        """Features of at most a block of pooled rows (indices) after the first pass."""
        rows = rows.to(self.pooled.device)
        if self.cache is not None and self.filled:
            return self.cache[rows]
        selected = self.pooled[rows]
        return self.compute(selected, torch.empty(selected.shape[0], self.width,
                                                  device=self.pooled.device,
                                                  dtype=self.dtype))


def product_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the device multiplies it natively (CUDA from Ampere, CPUs with
    AVX512-BF16 or AMX: 4-5x float32's speed for the permutations' product on a 2-core
    Sapphire Rapids VM), else float32 (elsewhere bfloat16 is converted, and slower)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        native = (getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                  or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
        return torch.bfloat16 if native else torch.float32
    return torch.float32


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
    phi = _FeatureBlocks(pooled, frequencies, dtype or product_dtype(pooled.device))

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


def _pass(phi: _FeatureBlocks, labels: torch.Tensor | None, m: int, n: int, *,
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


def _subset_scores(phi: _FeatureBlocks, rows: torch.Tensor, witness: torch.Tensor,
                   which: torch.Tensor) -> torch.Tensor:
    """Witness scores of some pooled rows (indices), with their witnesses ``which``."""
    scores = torch.empty(len(rows))
    for start in range(0, len(rows), _BLOCK):
        part = slice(start, start + _BLOCK)
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
