"""Building one monitoring report from windows (no database, no scheduler)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from monitor.features import FEATURE_NAMES
from monitor.report import ReportPolicy, build_report, macro_f1
from monitor.store.records import Window

CLASSES = ("a", "b", "c")
START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 1, 1, tzinfo=UTC)


def window(n: int, seed: int, brightness: float = 100.0, labeled: float = 0.0,
           accuracy: float = 0.95, emb_shift: float = 0.0, noise: float = 10.0,
           fps: float | None = None, motion: float = 10.0) -> Window:
    rng = np.random.default_rng(seed)
    true = rng.choice(CLASSES, size=n)
    wrong = rng.random(n) > accuracy
    predicted = np.where(wrong, rng.choice(CLASSES, size=n), true)
    frame = pd.DataFrame({name: rng.normal(10, 2, n) for name in FEATURE_NAMES})
    frame["brightness"] = rng.normal(brightness, 5, n)
    frame["noise"] = rng.normal(noise, 2, n)
    frame["motion_energy"] = rng.normal(motion, 2, n)
    frame["fps"] = np.nan if fps is None else fps  # raw clips carry no file metadata
    frame["predicted_label"] = predicted
    frame["confidence"] = np.clip(rng.normal(0.9, 0.05, n), 0.4, 1)
    frame["probabilities"] = [
        {c: (conf if c == p else (1 - conf) / (len(CLASSES) - 1)) for c in CLASSES}
        for p, conf in zip(predicted, frame["confidence"])]
    frame["true_label"] = np.where(rng.random(n) < labeled, true, None)
    centres = {c: i * 3.0 for i, c in enumerate(CLASSES)}
    embeddings = rng.normal(0, 1, (n, 16)) + np.array([centres[c] for c in predicted])[:, None]
    return Window(frame, (embeddings + emb_shift).astype(np.float32))


def report(current: Window, reference: Window | None = None):
    reference = reference or window(600, seed=0, labeled=1.0)
    return build_report(reference, current, CLASSES, model_name="m", model_version="1",
                        window_start=START, window_end=END)


def test_a_window_from_the_reference_distribution_is_not_drift() -> None:
    result = report(window(400, seed=1)).summary
    assert result.verdict == "no_drift" and result.reasons == []
    assert "fps" not in result.column_drift  # no values on one side: not tested
    assert {"brightness", "confidence", "predicted_label"} <= set(result.column_drift)
    assert result.realized_accuracy is None and result.estimated_accuracy is not None


def test_brightness_drift_is_flagged_by_its_column() -> None:
    result = report(window(400, seed=2, brightness=140.0)).summary
    assert result.verdict == "drift"
    assert result.column_drift["brightness"]["drifted"]
    assert not result.embedding_drift["drifted"]


@pytest.mark.parametrize(("drifted", "kwargs"), [
    ("noise", dict(noise=16.0)),
    ("fps", dict(fps=4.0, motion=16.0)),  # half the frame rate: twice the motion per frame
])
def test_noise_and_frame_rate_drift_are_flagged(drifted: str, kwargs: dict) -> None:
    reference = window(600, seed=0, labeled=1.0, fps=8.0)
    clean = report(window(400, seed=6, fps=8.0), reference).summary
    assert clean.verdict == "no_drift"
    result = report(window(400, seed=6, **{"fps": 8.0, **kwargs}), reference).summary
    assert result.verdict == "drift"
    assert result.column_drift[drifted]["drifted"]


def test_embedding_drift_alone_can_decide_the_verdict() -> None:
    result = report(window(400, seed=3, emb_shift=0.6)).summary
    assert result.verdict == "drift"
    assert any(r.startswith("embeddings moved within classes") for r in result.reasons)
    assert result.embedding_drift["effect_method"] == "witness_auc"
    assert result.embedding_drift["effect"] >= 0.55


def test_labels_add_realized_accuracy_and_the_classification_report() -> None:
    unlabeled = report(window(400, seed=4, accuracy=0.6))
    labeled = report(window(400, seed=4, accuracy=0.6, labeled=0.5))
    assert unlabeled.summary.realized_accuracy is None
    assert labeled.summary.labeled_rows == pytest.approx(200, abs=40)
    assert labeled.summary.realized_accuracy == pytest.approx(0.6 + 0.4 / 3, abs=0.08)
    assert "classification" in labeled.snapshot_json
    assert "classification" not in unlabeled.snapshot_json
    assert "Classification quality on the window" in labeled.html
    assert "realized accuracy" in labeled.html


def test_too_few_rows_is_its_own_verdict() -> None:
    result = report(window(5, seed=5))
    assert result.summary.verdict == "insufficient_data"
    assert "needs 30 rows" in result.summary.reasons[0]


def test_macro_f1() -> None:
    true = np.array(["a", "a", "b", "b"])
    assert macro_f1(true, true) == 1.0
    assert macro_f1(true, np.array(["a", "b", "b", "b"])) == pytest.approx((2 / 3 + 0.8) / 2)


def test_a_reference_too_small_for_a_class_mix_test_says_so_instead_of_flagging() -> None:
    # 12 reference rows for 3 classes: one class seen twice would make any window "drift".
    small = window(12, seed=8, labeled=1.0)
    result = build_report(small, window(400, seed=9), CLASSES, model_name="m",
                          model_version="1", window_start=START, window_end=END,
                          policy=ReportPolicy(min_rows=10)).summary
    assert "predicted_label" not in result.column_drift
    assert "brightness" in result.column_drift
    assert ("predicted_label not tested: 12 reference rows for 3 classes, a class-mix test "
            "needs 15") in result.reasons
    assert result.verdict == "no_drift"


def test_the_class_mix_test_counts_the_reference_s_own_noise() -> None:
    # 60 reference rows over 10 classes against 200-row windows of the same mix: a test
    # that took the reference's shares as exact (Evidently's "chisquare") flagged 37 of 40.
    classes = tuple(f"c{i}" for i in range(10))
    rng = np.random.default_rng(0)

    def labelled(n: int, p: np.ndarray | None = None) -> Window:
        base = window(n, seed=int(rng.integers(1 << 30)))
        base.frame["predicted_label"] = rng.choice(classes, size=n, p=p)
        return base

    from monitor.column_drift import class_mix_test

    policy = ReportPolicy(min_rows=10)
    flagged = 0
    for _ in range(40):  # the report's own test, at the level the report gives it
        result = class_mix_test(labelled(60).frame["predicted_label"],
                                labelled(200).frame["predicted_label"], policy.family_alpha,
                                policy.min_psi)
        assert result["method"] == "chi2_two_sample"
        flagged += result["drifted"]
    assert flagged <= 2
    # while a class mix that really moved is still flagged, in a whole report
    skewed = np.array([0.37] + [0.07] * 9)
    moved = build_report(labelled(60), labelled(200, skewed), classes, model_name="m",
                         model_version="1", window_start=START, window_end=END,
                         policy=ReportPolicy(min_rows=10)).summary
    assert moved.column_drift["predicted_label"]["drifted"]


def _videos(window: Window, durations: np.ndarray, clips_per_video: np.ndarray,
            seed: int) -> Window:
    """``window`` with its rows cut from videos: a video of ``clips_per_video`` clips
    repeats its file columns on every clip, as serving logs a long upload."""
    video = np.repeat(np.arange(len(durations)), clips_per_video)[:len(window)]
    frame = window.frame.copy()
    frame["video_id"] = [f"{seed}-{v}" for v in video]
    frame["duration"] = durations[video]
    frame["frame_count"] = np.rint(durations[video] * 30)
    frame["fps"], frame["width"], frame["height"] = 30.0, 640.0, 360.0
    return Window(frame, window.embeddings)


def test_file_columns_are_compared_per_video_not_per_clip() -> None:
    # Clean traffic: half the videos are 2 s (one clip), half 31 s (eight clips). The
    # reference holds one clip per video, the window every clip serving cut.
    rng = np.random.default_rng(0)
    ref_durations = np.where(rng.random(600) < 0.5, 2.0, 31.0) + rng.normal(0, 0.2, 600)
    reference = _videos(window(600, seed=0, labeled=1.0), ref_durations,
                        np.ones(600, dtype=int), 0)
    durations = np.where(rng.random(200) < 0.5, 2.0, 31.0) + rng.normal(0, 0.2, 200)
    counts = np.where(durations > 10, 8, 1)
    current = _videos(window(int(counts.sum()), seed=1), durations, counts, 1)
    result = report(current, reference).summary
    for column in ("duration", "frame_count"):
        assert result.column_drift[column]["unit"] == "video"
        assert result.column_drift[column]["rows"] == [600, 200]
        assert not result.column_drift[column]["drifted"], result.column_drift[column]
    assert result.verdict == "no_drift", result.reasons
    # Counted per clip, 8 of every 9 rows are long: an effect far over the 0.2 minimum.
    from monitor.column_drift import numeric_test

    per_clip = numeric_test(reference.frame["duration"], current.frame["duration"], 0.01, 0.2)
    assert per_clip["drifted"] and per_clip["effect"] > 0.5


def test_a_constant_reference_column_has_a_finite_effect() -> None:
    rng = np.random.default_rng(2)
    reference = _videos(window(300, seed=0, labeled=1.0), np.full(300, 2.0),
                        np.ones(300, dtype=int), 0)
    moved = _videos(window(200, seed=3), np.full(200, 2.0), np.ones(200, dtype=int), 3)
    moved.frame["width"], moved.frame["height"] = 1280.0, 720.0
    result = report(moved, reference).summary
    width = result.column_drift["width"]
    assert width["kind"] == "categorical" and width["effect_method"] == "psi"
    assert np.isfinite(width["effect"]) and 5 < width["effect"] < 30  # not 640,000
    assert width["drifted"] and result.verdict == "drift"
    # the same constant on both sides: nothing moved, nothing flagged
    same = report(_videos(window(200, seed=4), np.full(200, 2.0), np.ones(200, dtype=int), 4),
                  reference).summary
    assert same.column_drift["width"]["effect"] == 0.0 and not same.column_drift["width"]["drifted"]
    # a column whose reference barely moves is a scale that cannot vanish either
    from monitor.drift import normalized_wasserstein

    confident = np.clip(rng.normal(0.995, 0.001, 500), 0, 1)
    assert normalized_wasserstein(confident, confident - 0.0045) < 0.2


def test_a_shift_that_carries_clips_across_classes_is_caught_by_the_pooled_test() -> None:
    # 2x playback makes a slow class look like a fast one: a third of class a's clips now
    # sit in class b's cluster and are predicted b. Within each predicted class the
    # embeddings look like the reference's; only the pooled distribution moved.
    rng = np.random.default_rng(5)
    reference = window(900, seed=0, labeled=1.0)
    current = window(600, seed=6)
    frame = current.frame.copy()
    emb = current.embeddings.copy()
    moved = np.flatnonzero(frame["predicted_label"].to_numpy() == "a")[::3]
    frame.loc[moved, "predicted_label"] = "b"
    emb[moved] = rng.normal(0, 1, (len(moved), 16)).astype(np.float32) + 3.0
    result = report(Window(frame, emb), reference).summary
    drift = result.embedding_drift
    assert not drift["within_classes"]["drifted"]
    assert drift["pooled"]["drifted"] and drift["drifted"]
    assert drift["pooled"]["alpha"] == pytest.approx(drift["alpha"] / 2)
    assert any("embeddings moved pooled" in r for r in result.reasons)
