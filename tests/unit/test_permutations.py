"""Random splits for the permutation tests: right sizes, uniform, independent of ties."""

from __future__ import annotations

import numpy as np

from monitor.drift.permutations import permuted_sides, strata_codes


def test_every_split_keeps_each_strata_reference_count() -> None:
    ref_classes = np.array(["a"] * 30 + ["b"] * 10)
    cur_classes = np.array(["a"] * 5 + ["b"] * 25 + ["c"] * 20)
    codes = strata_codes(40, 50, (ref_classes, cur_classes))
    labels = permuted_sides(40, 50, 300, np.random.default_rng(0), codes, observed=True)
    assert labels.shape == (301, 90)
    assert labels[0, :40].all() and not labels[0, 40:].any()  # the observed split first
    for code, on_reference in zip(range(3), (30, 10, 0)):
        assert (labels[:, codes == code].sum(axis=1) == on_reference).all()


def test_splits_are_uniform_over_positions() -> None:
    labels = permuted_sides(300, 700, 4000, np.random.default_rng(1),
                            np.zeros(1000, dtype=np.int64))
    assert (labels.sum(axis=1) == 300).all()
    shares = labels.mean(axis=0)  # each position on the reference side 30 % of the time
    assert abs(shares.mean() - 0.3) < 1e-12
    assert np.abs(shares - 0.3).max() < 0.035  # 4.8 standard errors of 4,000 draws
    # positions are chosen independently of where they sit (no drift along the rows)
    assert abs(shares[:500].mean() - shares[500:].mean()) < 0.005


class _TiesFirst:
    """A generator whose first draws are all one value (every key tied), then real."""

    def __init__(self, tied_draws: int) -> None:
        self.left, self.real = tied_draws, np.random.default_rng(2).bit_generator
        self.bit_generator = self

    def random_raw(self, size: int) -> np.ndarray:
        if self.left:
            self.left -= 1
            return np.full(size, (7 << 32) | 7, dtype=np.uint64)  # both halves 7
        return self.real.random_raw(size)


def test_a_tied_draw_is_drawn_again() -> None:
    labels = permuted_sides(3, 7, 5, _TiesFirst(2), np.zeros(10, dtype=np.int64))
    assert (labels.sum(axis=1) == 3).all()
