"""Prior shift, per-class embedding drift and confidence-based accuracy estimation."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.drift import (
    class_frequencies,
    estimated_accuracy,
    fit_confidence_calibration,
    homogeneity,
    label_shift,
    per_class_embedding_drift,
)

CLASSES = ("a", "b", "c")


def _labels(n: int, p: list[float], seed: int) -> list[str]:
    return list(np.random.default_rng(seed).choice(CLASSES, size=n, p=p))


def test_label_shift_flags_a_changed_class_mix_only() -> None:
    reference = _labels(600, [1 / 3, 1 / 3, 1 / 3], seed=0)
    assert not label_shift(reference, _labels(500, [1 / 3, 1 / 3, 1 / 3], seed=1), CLASSES).drifted
    shifted = label_shift(reference, _labels(500, [0.6, 0.2, 0.2], seed=2), CLASSES)
    assert shifted.drifted and shifted.p_value < 1e-6
    assert class_frequencies(["a", "a", "b", "c"], CLASSES) == {"a": 0.5, "b": 0.25, "c": 0.25}


def test_label_shift_rejects_labels_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="not among"):
        label_shift(["a", "z"], ["a"], CLASSES)


def test_per_class_drift_points_at_the_class_that_moved() -> None:
    rng = np.random.default_rng(0)
    centres = {"a": 0.0, "b": 4.0, "c": -4.0}

    def sample(n: int, moved: str | None) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.choice(CLASSES, size=n)
        shift = np.array([centres[c] + (0.8 if c == moved else 0.0) for c in labels])
        return rng.normal(0, 1, (n, 8)) + shift[:, None], labels

    ref_emb, ref_lab = sample(900, None)
    cur_emb, cur_lab = sample(900, moved="b")
    results = per_class_embedding_drift(ref_emb, ref_lab, cur_emb, cur_lab)
    assert set(results) == set(CLASSES)
    assert [c for c, r in results.items() if r.drifted] == ["b"]
    assert results["a"].alpha == pytest.approx(0.05 / 3)
    assert per_class_embedding_drift(ref_emb, ref_lab, cur_emb[:10], cur_lab[:10]) == {}


def test_calibration_is_monotone_and_pools_equal_confidences() -> None:
    calibration = fit_confidence_calibration(np.array([0.5, 0.5, 0.9, 0.7, 0.6]),
                                             np.array([0, 1, 1, 0, 1]))
    mapped = calibration(np.array([0.4, 0.5, 0.65, 0.95]))
    assert np.all(np.diff(mapped) >= 0)
    assert calibration(np.array([0.5]))[0] == pytest.approx(0.5)


def test_estimated_accuracy_follows_a_covariate_shift_without_labels() -> None:
    rng = np.random.default_rng(0)
    # A calibrated model: a prediction with confidence c is right with probability c.
    ref_conf = rng.uniform(0.3, 1.0, 5000)
    calibration = fit_confidence_calibration(ref_conf, rng.random(5000) < ref_conf)
    shifted_conf = rng.beta(2, 5, 3000) * 0.7 + 0.3  # the window is much less confident
    shifted_correct = rng.random(3000) < shifted_conf
    estimate = estimated_accuracy(calibration, shifted_conf)
    assert estimate == pytest.approx(shifted_correct.mean(), abs=0.03)
    assert estimate < estimated_accuracy(calibration, ref_conf) - 0.1


def test_estimation_needs_data() -> None:
    with pytest.raises(ValueError):
        fit_confidence_calibration(np.array([]), np.array([]))
    calibration = fit_confidence_calibration(np.array([0.9]), np.array([1]))
    with pytest.raises(ValueError, match="no predictions"):
        estimated_accuracy(calibration, np.array([]))


def test_one_early_mistake_in_a_small_reference_does_not_zero_low_confidences() -> None:
    # 100 reference clips, all right but the least confident one.
    confidence = np.linspace(0.5, 1.0, 100)
    correct = np.ones(100)
    correct[0] = 0
    floor = fit_confidence_calibration(confidence, correct)
    # The lone mistake pools with the clips above it: 99 of 100 right.
    assert floor(np.array([0.3]))[0] == pytest.approx(0.99)
    bare = fit_confidence_calibration(confidence, correct, min_block=1)
    assert bare(np.array([0.3]))[0] == 0.0
    assert np.all(np.diff(floor(np.linspace(0, 1, 50))) >= 0)


def test_homogeneity_is_a_two_sample_test() -> None:
    # the same shares: no evidence, however the sizes differ
    assert homogeneity(np.array([[10, 10, 10], [100, 100, 100]]))[1] == pytest.approx(1.0)
    # a 60-row reference 8/4 off the even split is weak evidence against 600 even rows...
    assert homogeneity(np.array([[24, 16, 20], [200, 200, 200]]))[1] > 0.3
    # ...and strong evidence when both samples are ten times larger
    assert homogeneity(np.array([[240, 160, 200], [2000, 2000, 2000]]))[1] < 1e-3
    # nothing to compare: one class, or an empty sample
    # (undefined, so that no caller can read it as "no drift")
    assert all(np.isnan(homogeneity(np.array([[5, 0], [7, 0]]))))
    assert all(np.isnan(homogeneity(np.array([[0, 0], [3, 4]]))))
