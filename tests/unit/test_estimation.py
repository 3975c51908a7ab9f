"""Label-free estimators on made-up windows whose accuracy is known, and the importance-
weighted accuracy of the labeling queue."""

from __future__ import annotations

import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from monitor.estimation import COMBINED, HEADLINE, METHODS, AccuracyEstimator, Outputs, ShiftedSet
from monitor.estimation.estimator import COMBINED_FROM
from monitor.estimation import fit_estimator
from monitor.estimation.estimator import atc_score, atc_threshold, fit_spread
from monitor.estimation.labeled import (
    importance_weighted_accuracy,
    inclusion_probabilities,
    uniform_accuracy,
)
from monitor.labeling import sharpened_p_wrong

C, D, F = 4, 12, 6
CENTRES = np.random.default_rng(99).normal(0, 1.2, (C, D))


def world(n: int, seed: int, noise: float = 0.0, labels: np.ndarray | None = None) -> Outputs:
    """A made-up model: embeddings around class centres, blurred by ``noise``; the model
    answers with the nearest centre and a softmax over negative distances. More noise, more
    mistakes, as a corruption does; the true labels are known."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, C, n) if labels is None else labels
    emb = CENTRES[true] + rng.normal(0, 1.0 + noise, (n, D))
    logits = -np.linalg.norm(emb[:, None] - CENTRES[None], axis=2) * 2.0
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    features = np.c_[rng.normal(100 + 20 * noise, 5, (n, 1)), rng.normal(10, 2, (n, F - 1))]
    return Outputs(p / p.sum(axis=1, keepdims=True), emb.astype(np.float32), features, true)


def shifted(families: dict[str, tuple[float, ...]], n: int = 400) -> list[ShiftedSet]:
    # zlib.crc32, not hash(): str hashes are salted per process, so every run of the suite
    # fitted on other sets (one in many missed the interval test below).
    return [ShiftedSet(name, level, world(n, seed=zlib.crc32(f"{name}:{level}".encode()),
                                          noise=level))
            for name, levels in families.items() for level in levels]


FAMILIES = {"a": (0.5, 1.5, 2.5), "b": (1.0, 2.0, 3.0), "c": (0.8, 1.8)}


@pytest.fixture(scope="module")
def estimator() -> AccuracyEstimator:
    return fit_estimator(world(600, seed=1), shifted(FAMILIES), C,
                         head_data=tuple(getattr(world(2000, seed=2), k)
                                         for k in ("embeddings", "labels")))


def test_every_estimator_tracks_accuracy_on_a_shift_it_was_fitted_around(estimator) -> None:
    for noise in (0.0, 1.2, 2.2):
        window = world(3000, seed=50 + int(10 * noise), noise=noise)
        estimates = estimator.estimate(window)
        assert set(estimates) == {*METHODS, COMBINED}
        for method in ("agreement", "error_model", COMBINED):
            e = estimates[method]
            # Inside its own interval, and close: these methods saw this kind of shift.
            assert e.low <= window.accuracy <= e.high, (method, noise, e)
            assert abs(e.value - window.accuracy) < 0.08, (method, noise, e)
        for e in estimates.values():
            assert 0 <= e.low <= e.value <= e.high <= 1


def test_an_estimator_that_missed_on_held_out_families_says_so_in_its_width(estimator
                                                                           ) -> None:
    window = world(2000, seed=7, noise=1.0)
    for method, e in estimator.estimate(window).items():
        # The interval holds the method's error on families it was not fitted on.
        if 0 < e.low and e.high < 1:
            assert e.high - e.low >= 2 * 1.95 * estimator.spreads[method](0.0)
    assert set(estimator.spreads) == {*METHODS, COMBINED, HEADLINE}
    worst = max(COMBINED_FROM, key=lambda m: estimator.spreads[m].rms)
    assert estimator.weights[worst] == min(estimator.weights.values())
    assert set(estimator.weights) == set(COMBINED_FROM)  # CBPE is shown, never combined
    assert abs(sum(estimator.weights.values()) - 1) < 1e-9


def test_the_interval_widens_with_how_far_the_window_lies_from_the_reference() -> None:
    clean = np.array([0.02, -0.02])
    spread = fit_spread(clean, np.array([0.1, 1.0, 2.0]), np.array([-0.02, 0.2, -0.3]))
    assert spread(0.0) == pytest.approx(0.02) and spread(-1.0) == spread(0.0)
    assert spread.slope > 0 and 0.2 < spread(2.0)
    # Shifts no worse than clean traffic add nothing.
    flat = fit_spread(clean, np.array([0.5, 1.0]), np.array([0.01, 0.0]))
    assert (flat.base, flat.slope, flat.rms) == pytest.approx((0.0004, 0.0, 0.015))


def test_a_window_like_the_reference_gets_a_narrower_interval(estimator) -> None:
    near, far = (estimator.estimate(world(2000, seed=s, noise=n))[COMBINED]
                 for s, n in ((11, 0.0), (12, 2.5)))
    assert near.high - near.low < far.high - far.low


def test_atc_reproduces_the_reference_accuracy_on_the_reference() -> None:
    reference = world(1000, seed=3, noise=1.0)
    scores = atc_score(reference.probabilities)
    threshold = atc_threshold(scores, reference.correct)
    assert abs((scores > threshold).mean() - reference.accuracy) <= 2 / len(reference)


def test_doc_moves_with_mean_confidence(estimator) -> None:
    window = world(500, seed=4)
    values = estimator.point_estimates(window)
    expected = (estimator.reference_accuracy + window.confidence.mean()
                - estimator.reference_confidence)
    assert values["doc"] == pytest.approx(min(max(expected, 0), 1))


def test_agreement_heads_disagree_more_where_the_embedding_moved(estimator) -> None:
    clean, far = world(1000, seed=5), world(1000, seed=6, noise=3.0)
    agree = [estimator.heads.agreement(w.embeddings, w.predicted).mean() for w in (clean, far)]
    assert agree[1] < agree[0] - 0.1


def test_leaving_a_family_out_means_its_data_cannot_change_the_fit() -> None:
    reference = world(400, seed=1)
    without_c = [s for s in shifted(FAMILIES) if s.family != "c"]
    fit = fit_estimator(reference, without_c, C)
    assert "c" not in fit.families and fit.families == ("a", "b")
    # Fitting is deterministic, and a family enters only through the sets it is handed:
    # the fit without c is reproducible, and differs from the fit that saw c.
    again = fit_estimator(reference, without_c, C)
    window = world(500, seed=9, noise=1.8)
    assert fit.estimate(window) == again.estimate(window)
    with_c = fit_estimator(reference, shifted(FAMILIES), C)
    assert with_c.estimate(window) != fit.estimate(window)
    assert fit.spreads != with_c.spreads


def test_fitting_needs_labels_and_two_families() -> None:
    reference = world(200, seed=1)
    with pytest.raises(ValueError, match="two families"):
        fit_estimator(reference, shifted({"a": (1.0,)}), C)
    with pytest.raises(ValueError, match="true labels"):
        fit_estimator(replace(reference, labels=None), shifted(FAMILIES), C)


def test_a_saved_estimator_loads_and_estimates_the_same(estimator, tmp_path: Path) -> None:
    estimator.save(tmp_path)
    loaded = AccuracyEstimator.load(tmp_path)
    window = world(300, seed=11, noise=1.5)
    assert loaded.estimate(window) == estimator.estimate(window)
    assert AccuracyEstimator.load(tmp_path / "nothing-here") is None


# Importance-weighted accuracy ---------------------------------------------------------

def population(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Wrong flags and an error model that is wrong about them: confident mistakes
    (e ~ 0.02 on a class that is all wrong), as under concept drift."""
    rng = np.random.default_rng(seed)
    flipped = rng.random(n) < 0.3
    wrong = np.where(flipped, 1.0, rng.random(n) < 0.05).astype(float)
    e = np.where(flipped, 0.02, np.clip(rng.normal(0.1, 0.05, n), 0.01, 0.9))
    return wrong, e


@pytest.mark.parametrize("use_queue", [True, False])
def test_the_importance_weighted_estimate_is_unbiased(use_queue: bool) -> None:
    wrong, e = population()
    truth = 1 - wrong.mean()
    n = len(wrong)
    pi = inclusion_probabilities(e, 100, floor=0.3) if use_queue else np.full(n, 100 / n)
    e_used = e if use_queue else np.zeros(n)
    rng = np.random.default_rng(1)
    values, covered = [], 0
    for _ in range(3000):
        chosen = rng.random(n) < pi
        estimate = importance_weighted_accuracy(e_used, pi, chosen, chosen, wrong)
        values.append(estimate.value)
        covered += estimate.low <= truth <= estimate.high
    standard_error = np.std(values) / np.sqrt(len(values))
    assert abs(np.mean(values) - truth) < 4 * standard_error + 1e-3
    assert covered / 3000 > 0.88


def test_labels_that_never_came_back_are_missing_at_random() -> None:
    wrong, e = population(seed=2)
    pi = inclusion_probabilities(e, 300, floor=0.5)
    rng = np.random.default_rng(3)
    values = []
    for _ in range(1000):
        chosen = rng.random(len(e)) < pi
        labeled = chosen & (rng.random(len(e)) < 0.6)
        values.append(importance_weighted_accuracy(e, pi, chosen, labeled, wrong).value)
    assert abs(np.mean(values) - (1 - wrong.mean())) < 0.01


def test_a_few_labels_that_all_came_back_right_do_not_claim_certainty() -> None:
    n, budget = 2000, 40
    e = np.full(n, 0.002)
    pi = inclusion_probabilities(e, budget, floor=0.3)
    chosen = np.zeros(n, bool)
    chosen[::n // budget] = True
    estimate = importance_weighted_accuracy(e, pi, chosen, chosen, np.zeros(n))
    # Residuals are all -0.002: taken alone they would give a half-width of ~0.0002.
    observed = np.sqrt(((1 - pi[chosen]) * 0.002 ** 2 / pi[chosen] ** 2).sum()) / n
    expected = np.sqrt(((1 - pi) * 0.002 * 0.998 / pi).sum()) / n
    assert estimate.value == pytest.approx(1.0)
    assert estimate.low == pytest.approx(1.0 - 1.959964 * expected, abs=1e-6)
    assert 1.0 - estimate.low > 10 * 1.959964 * observed


def test_inclusion_probabilities_spend_the_budget_and_leave_none_out() -> None:
    e = np.r_[np.full(990, 0.001), np.full(10, 0.5)]
    pi = inclusion_probabilities(e, 50, floor=0.2)
    assert pi.sum() == pytest.approx(50)
    assert np.all(pi > 0) and np.all(pi <= 1)
    assert pi[-1] > 10 * pi[0] and pi[0] >= 0.2 * 50 / 1000 - 1e-12
    assert inclusion_probabilities(e, 5000, floor=0.2).tolist() == [1.0] * 1000
    assert importance_weighted_accuracy(e, pi, np.zeros(1000, bool), np.zeros(1000, bool),
                                        np.zeros(1000)) is None


def test_uniform_accuracy_has_a_wilson_interval() -> None:
    all_right = uniform_accuracy(np.ones(20))
    assert all_right.value == 1.0 and all_right.high == 1.0 and 0.8 < all_right.low < 0.85
    assert uniform_accuracy(np.array([])) is None


def test_labels_sharpen_the_error_model_for_their_class() -> None:
    e = np.array([0.02, 0.02, 0.3])
    sharpened = sharpened_p_wrong(e, ["a", "b", "b"], {"a": (10, 10)}, strength=10.0)
    assert sharpened[0] == pytest.approx((10 * 0.02 + 10) / 20)
    assert sharpened[1:].tolist() == pytest.approx([0.02, 0.3])


def test_a_shifted_window_s_estimate_falls_or_says_it_cannot_estimate(estimator) -> None:
    from monitor.estimation.judgment import label_free_accuracy

    reference = world(600, seed=1)
    clean = label_free_accuracy(reference, world(800, seed=60), estimator)
    assert clean.estimable and clean.estimate.method == HEADLINE
    assert clean.estimate.low <= world(800, seed=60).accuracy <= clean.estimate.high
    for noise in (1.5, 3.0):
        window = world(800, seed=61, noise=noise)
        judged = label_free_accuracy(reference, window, estimator)
        assert window.accuracy < clean.estimate.value - 0.1
        if judged.estimable:
            assert judged.estimate.value < clean.estimate.value - 0.05
        else:
            assert judged.reason and judged.estimate is None
            # the labels that would bound it within 5 points, for the window's size
            assert 100 < judged.labels_needed <= len(window)
            assert HEADLINE not in judged.estimates and "reweighted" in judged.estimates


def test_a_window_nothing_in_the_reference_looks_like_cannot_be_estimated(estimator) -> None:
    from monitor.estimation.judgment import label_free_accuracy, labels_needed

    reference = world(600, seed=1)
    far = world(500, seed=62)
    far = replace(far, embeddings=far.embeddings + 8.0)  # somewhere the reference never was
    judged = label_free_accuracy(reference, far, estimator)
    assert not judged.estimable and judged.domain_auc > 0.9
    assert "outside the reference" in judged.reason
    # +-5 points at 95 % near 0.5: 385 labels, or every row of a smaller window
    assert labels_needed(10_000, 0.5) == 385 and labels_needed(200, 0.5) == 200
    assert labels_needed(10_000, 0.9) < labels_needed(10_000, 0.5)
