"""Effect sizes, and verdicts that need an effect as well as a p-value."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from monitor.drift import embedding_drift, normalized_wasserstein, psi
from monitor.report import ReportPolicy, build_report
from tests.unit.test_report import CLASSES, END, START, window


def test_normalized_wasserstein_is_scipys_distance_over_the_reference_spread() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 2, 500), rng.normal(1, 3, 700)
    assert normalized_wasserstein(a, b) == pytest.approx(wasserstein_distance(a, b) / a.std())
    assert normalized_wasserstein(a, a) == 0.0
    # a constant column that jumps is a large but finite effect; one that stays is none
    assert normalized_wasserstein(np.full(50, 8.0), np.full(50, 4.0)) == pytest.approx(10.0)
    assert normalized_wasserstein(np.full(50, 8.0), np.full(50, 8.0)) == 0.0
    assert np.isnan(normalized_wasserstein(np.array([np.nan]), a))


def test_psi_of_equal_mixes_is_zero_and_grows_with_the_change() -> None:
    assert psi(np.array([50, 50]), np.array([500, 500])) == 0.0
    small, large = psi(np.array([50, 50]), np.array([55, 45])), psi(np.array([50, 50]),
                                                                      np.array([90, 10]))
    assert 0 < small < 0.1 < large
    assert np.isnan(psi(np.array([0, 0]), np.array([1, 2])))


def test_a_large_clean_window_with_a_tiny_offset_is_not_drift() -> None:
    # 20,000 rows whose noise sits 0.15 reference standard deviations off: the KS test on
    # its own calls that drift (p far below its level), the effect says it does not matter.
    reference = window(2000, seed=0, labeled=1.0)
    current = window(20_000, seed=1, noise=10.3)
    summary = build_report(reference, current, CLASSES, model_name="m", model_version="1",
                           window_start=START, window_end=END).summary
    noise = summary.column_drift["noise"]
    assert noise["score"] < noise["threshold"]
    assert noise["effect"] < 0.2 and not noise["drifted"]
    assert summary.verdict == "no_drift", summary.reasons
    assert summary.embedding_drift["effect"] < 0.55
    # the same window moved by a whole standard deviation is drift
    moved = build_report(reference, window(20_000, seed=1, noise=12.0), CLASSES, model_name="m",
                         model_version="1", window_start=START, window_end=END).summary
    assert moved.verdict == "drift" and moved.column_drift["noise"]["drifted"]
    assert any("noise per clip (W=" in r for r in moved.reasons)


def test_an_undefined_class_mix_test_is_said_and_not_counted_as_no_drift() -> None:
    reference, current = window(300, seed=0, labeled=1.0), window(300, seed=1)
    for w in (reference, current):
        w.frame["predicted_label"] = "a"
    summary = build_report(reference, current, CLASSES, model_name="m", model_version="1",
                           window_start=START, window_end=END).summary
    assert summary.column_drift["predicted_label"]["drifted"] is None
    assert summary.column_drift["predicted_label"]["score"] is None
    assert any(r.startswith("predicted_label not tested") for r in summary.reasons)
    tested = [c for c, v in summary.column_drift.items() if v["drifted"] is not None]
    assert "predicted_label" not in tested
    # with the class mix as the only test of the verdict there is no verdict to give
    prior_only = build_report(reference, current, CLASSES, model_name="m", model_version="1",
                              window_start=START, window_end=END,
                              policy=ReportPolicy(verdict_tests=("prior",))).summary
    assert prior_only.verdict == "insufficient_data"


def test_prior_shift_and_per_class_drift_enter_the_verdict_when_chosen() -> None:
    reference = window(900, seed=0, labeled=1.0)
    skewed = window(600, seed=2)
    rng = np.random.default_rng(3)
    skewed.frame["predicted_label"] = rng.choice(CLASSES, size=600, p=[0.7, 0.15, 0.15])
    default = build_report(reference, skewed, CLASSES, model_name="m", model_version="1",
                           window_start=START, window_end=END).summary
    assert default.verdict == "drift"
    assert any(r.startswith("predicted class mix changed") for r in default.reasons)
    without = build_report(reference, skewed, CLASSES, model_name="m", model_version="1",
                           window_start=START, window_end=END,
                           policy=ReportPolicy(verdict_tests=("features", "embedding"))).summary
    assert without.verdict == "no_drift"
    assert any(r.startswith("not in the verdict: predicted class mix") for r in without.reasons)

    # embeddings of one class move: per-class drift decides when it is in the verdict
    moved = window(600, seed=4)
    rows = (moved.frame["predicted_label"] == "b").to_numpy()
    moved.embeddings[rows] += 1.0
    per_class = build_report(reference, moved, CLASSES, model_name="m", model_version="1",
                             window_start=START, window_end=END,
                             policy=ReportPolicy(verdict_tests=("per_class",))).summary
    assert per_class.verdict == "drift"
    assert per_class.per_class_drift["b"]["drifted"]
    assert not per_class.per_class_drift["a"]["drifted"]


def test_policy_rejects_unknown_verdict_tests() -> None:
    with pytest.raises(ValueError, match="verdict_tests"):
        ReportPolicy(verdict_tests=("features", "vibes"))


def test_stratified_embedding_test_is_calibrated_against_a_balanced_reference() -> None:
    # The reference has exactly 60 rows of each class, a window a random mix. Permuting
    # across classes gives the reference random mixes it never has: p-values come out too
    # large (conservative). Permuting within classes restores calibrated p-values.
    centres = np.random.default_rng(1234).normal(0, 3, (5, 16))
    ref_classes = np.repeat(np.arange(5), 60)
    plain, stratified = [], []
    for i in range(60):  # 30 left the plain mean within a few hundredths of its bound
        rng = np.random.default_rng(i)
        cur_classes = rng.integers(0, 5, 200)
        ref = centres[ref_classes] + rng.normal(0, 1, (300, 16))
        cur = centres[cur_classes] + rng.normal(0, 1, (200, 16))
        plain.append(embedding_drift(ref, cur, permutations=99, features=128, seed=i).p_value)
        result = embedding_drift(ref, cur, permutations=99, features=128, seed=i,
                                 strata=(ref_classes, cur_classes))
        stratified.append(result.p_value)
        assert 0.35 < result.effect < 0.65
    assert np.mean(plain) > 0.6
    assert 0.4 < np.mean(stratified) < 0.6
    assert sum(p < 0.05 for p in stratified) <= 8
