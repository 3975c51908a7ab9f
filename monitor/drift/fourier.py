"""Random Fourier features of the embedding test's pooled rows, block by block: the
feature map (cosine and sine pairs of centred rows), the cache that keeps it between the
test's passes, and the type its products run in. Used by :mod:`monitor.drift.embedding`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

BLOCK_ROWS = 2048  # pooled rows a block holds: it stays in the processor's cache
# Pooled rows x features up to this many bytes keep their feature matrix between the passes
# (first permutations, then witness and remaining permutations) instead of computing it again.
FEATURE_CACHE_BYTES = 256 * 1024 * 1024


class FeatureBlocks:
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
    thousandths of a radian for most. c keeps the sums the passes accumulate near zero,
    which is what lets the features and the 0/1 splits be multiplied in bfloat16: rounded
    sums are harmless near zero and would not be near m times the mean feature. Each
    block's sums are added in float32. Rounding is a fixed function of the rows, applied
    alike to the observed split and to every permutation, so the permutation test keeps
    its level exactly; against float32 throughout, over 46 windows of 500 and 10,000 rows
    per side, the statistic moved by at most 0.2 % (0.1 % with float32 angles), the
    p-value by at most one permutation, the effect by at most 0.0003, and no verdict
    changed.

    Each block is computed into memory that is written once and reused: a matrix of all
    rows' features when it fits :data:`FEATURE_CACHE_BYTES` (filled on the first pass,
    read on the later ones), otherwise one block-sized buffer, refilled on every pass. A
    block of :data:`BLOCK_ROWS` rows stays in the processor's cache between its product,
    its cosine and the products that consume it. Fresh memory is not free: its first write
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
        block = min(BLOCK_ROWS, self.total)
        self.buffer = None if fits else torch.empty(block, self.width, device=device,
                                                    dtype=dtype)
        self.centred = torch.empty(block, pooled.shape[1], device=device, dtype=dtype)
        self.products = torch.empty(block, count, device=device, dtype=dtype)
        # float32 angles for the wave functions, when the product gives another type
        self.angles = (None if dtype == torch.float32
                       else torch.empty(block, count, device=device))
        self.waves = torch.empty(block, count, device=device)

    def centre_on(self, rows: torch.Tensor) -> None:
        """Make the origin o the mean of ``rows`` (indices of pooled rows) and c their mean
        features; before any pass."""
        assert not self.filled
        chosen = self.pooled[rows.to(self.pooled.device)]
        self.origin = chosen.mean(dim=0)
        total = torch.zeros(self.width, device=chosen.device)
        for start in range(0, len(chosen), BLOCK_ROWS):
            part = chosen[start:start + BLOCK_ROWS]
            total += self.compute(part, torch.empty(len(part), self.width,
                                                    device=chosen.device)).sum(dim=0)
        self.centre = (total / max(len(chosen), 1)).reshape(2, -1)

    def compute(self, rows: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Unscaled features of ``rows`` (at most a block of embeddings) into ``out``:
        cos(W (x - o)) - c_cos and sin(W (x - o)) - c_sin; the statistics take the scale."""
        size = rows.shape[0]
        centred = torch.sub(rows, self.origin, out=self.centred[:size])
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
        for start in range(0, self.total, BLOCK_ROWS):
            rows = slice(start, min(start + BLOCK_ROWS, self.total))
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
