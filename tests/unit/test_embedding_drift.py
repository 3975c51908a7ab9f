"""The embedding-drift test: verdicts, calibration and input checks."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.drift import embedding_drift


def clusters(n: int, seed: int, shift: float = 0.0, weights: np.ndarray | None = None,
             dim: int = 32) -> np.ndarray:
    """Embeddings from a mixture of 5 Gaussian clusters (like 5 classes)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(0, 3, (5, dim))
    labels = rng.choice(5, size=n, p=weights)
    return (centres[labels] + rng.normal(0, 1, (n, dim)) + shift).astype(np.float32)


def test_same_distribution_is_not_drift_and_a_shift_is() -> None:
    reference = clusters(800, seed=1)
    same = embedding_drift(reference, clusters(600, seed=2))
    shifted = embedding_drift(reference, clusters(600, seed=3, shift=0.5))
    assert not same.drifted and same.p_value > 0.05
    assert shifted.drifted and shifted.p_value < 0.01
    assert shifted.statistic > same.statistic
    assert (shifted.reference_rows, shifted.current_rows) == (800, 600)


def test_a_change_in_class_mix_alone_is_drift() -> None:
    reference = clusters(800, seed=1)
    skewed = clusters(600, seed=4, weights=np.array([0.6, 0.1, 0.1, 0.1, 0.1]))
    assert embedding_drift(reference, skewed).drifted


def test_false_alarms_stay_near_alpha_over_repeated_clean_windows() -> None:
    alarms = [embedding_drift(clusters(150, seed=10 + i), clusters(150, seed=500 + i),
                              permutations=99, features=128, seed=i).drifted
              for i in range(60)]
    # Expected 3 of 60 at alpha 0.05; 9 or more has probability < 0.01 if calibrated.
    assert sum(alarms) <= 8


def test_results_are_reproducible_for_a_seed() -> None:
    a, b = clusters(300, seed=1), clusters(300, seed=2, shift=0.1)
    assert embedding_drift(a, b, seed=7) == embedding_drift(a, b, seed=7)


@pytest.mark.parametrize(("reference", "current", "message"), [
    (np.zeros((10, 4)), np.zeros((10, 5)), "one width"),
    (np.zeros(10), np.zeros((10, 4)), "one width"),
    (np.zeros((1, 4)), np.zeros((10, 4)), "at least two rows"),
])
def test_bad_inputs_are_rejected(reference, current, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        embedding_drift(reference, current)


def test_stopping_early_never_changes_a_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor.drift import embedding

    windows = [(clusters(300, seed=40 + i), clusters(200, seed=80 + i, shift=0.3 * (i % 4)))
               for i in range(16)]
    early = [embedding_drift(a, b, features=128, seed=i) for i, (a, b) in enumerate(windows)]
    monkeypatch.setattr(embedding, "FIRST_PERMUTATIONS", 10_000)
    full = [embedding_drift(a, b, features=128, seed=i) for i, (a, b) in enumerate(windows)]
    assert [r.drifted for r in early] == [r.drifted for r in full]
    assert {r.permutations for r in full} == {200}
    assert any(r.permutations == 24 for r in early)  # clean windows stopped early
    assert all(r.permutations == 200 for r in early if r.drifted)
    assert any(r.drifted for r in early) and not all(r.drifted for r in early)


def test_large_window_paths_give_the_same_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    # Above WITNESS_ROWS the witness is scored on a subset and the remaining permutations
    # take a pass of their own; above FEATURE_CACHE_BYTES every pass computes the features
    # again. Shrunk here, so a small window takes those paths.
    from monitor.drift import embedding, fourier

    reference = clusters(600, seed=1)
    windows = [clusters(500, seed=2), clusters(500, seed=3, shift=0.5)]
    small = [embedding_drift(reference, w) for w in windows]
    monkeypatch.setattr(embedding, "WITNESS_ROWS", 700)
    monkeypatch.setattr(fourier, "FEATURE_CACHE_BYTES", 0)
    large = [embedding_drift(reference, w) for w in windows]
    assert [r.drifted for r in small] == [r.drifted for r in large] == [False, True]
    for a, b in zip(small, large):
        assert a.statistic == pytest.approx(b.statistic, rel=1e-5)
        assert abs(a.effect - b.effect) < 0.05
    assert large[1].permutations == 200


@pytest.mark.parametrize("offset", [0.0, 20.0])
def test_bfloat16_products_keep_float32s_statistics_and_verdicts(offset: float) -> None:
    # Where the hardware multiplies bfloat16 natively the features are computed and
    # multiplied in it; the statistic must stay float32's to 0.2 %, whatever the shift,
    # with the same verdicts, also for embeddings far from the origin (post-ReLU features
    # all share a large positive mean). Centring is what makes it hold: without the
    # features' centre a clean window's statistic moved by 1.9 %; without the rows' (the
    # angles' product is in bfloat16 too) embeddings offset by 20 moved by 0.34 %.
    import torch

    reference = clusters(900, seed=1) + offset
    for i, shift in enumerate((0.0, 0.05, 0.15, 0.5)):
        current = clusters(700, seed=20 + i, shift=shift) + offset
        exact = embedding_drift(reference, current, seed=i, dtype=torch.float32)
        rounded = embedding_drift(reference, current, seed=i, dtype=torch.bfloat16)
        assert rounded.statistic == pytest.approx(exact.statistic, rel=2e-3)
        assert abs(rounded.p_value - exact.p_value) <= 0.02
        assert abs(rounded.effect - exact.effect) <= 0.01
        assert rounded.drifted == exact.drifted
    assert not embedding_drift(reference, clusters(700, seed=20) + offset,
                               dtype=torch.bfloat16).drifted
    assert embedding_drift(reference, clusters(700, seed=23, shift=0.5) + offset,
                           dtype=torch.bfloat16).drifted

