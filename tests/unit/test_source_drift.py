"""Drift per source: twenty cameras that differ from each other, one goes out of focus.
Each camera is tested against its own recent past, so the cameras' innate differences are
no alarm, the pooled window dilutes the one that changed, and the per-source test names it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from monitor.column_drift import SOURCE_COLUMNS, source_drift
from monitor.report import ReportPolicy
from tests.unit.test_report import CLASSES, END, START, window

CAMERAS = [f"camera-{i}" for i in range(20)]


def _cameras(rows_each: int, seed: int, blurred: str | None = None,
             sharpness_drop: float = 4.0) -> pd.DataFrame:
    """Each camera's own scene: its brightness and contrast levels differ (a dark dock, a
    bright yard); ``blurred`` loses ``sharpness_drop`` of sharpness (about two of its
    standard deviations)."""
    rng = np.random.default_rng(seed)
    parts = []
    for i, camera in enumerate(CAMERAS):
        part = pd.DataFrame({c: rng.normal(10, 2, rows_each) for c in SOURCE_COLUMNS})
        part["brightness"] = rng.normal(60 + 4 * i, 5, rows_each)
        part["contrast"] = rng.normal(5 + 0.5 * (i % 5), 1, rows_each)
        if camera == blurred:
            part["sharpness"] -= sharpness_drop
        part["source_id"] = camera
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _window_of(cameras: pd.DataFrame, seed: int):
    """A report window whose quality features are the cameras' rows."""
    base = window(len(cameras), seed)
    frame = base.frame.copy()
    for c in [*SOURCE_COLUMNS, "source_id"]:
        frame[c] = cameras[c].to_numpy()
    return type(base)(frame, base.embeddings)


def _report(current: pd.DataFrame, baseline: pd.DataFrame, seed: int):
    from monitor.report import build_report

    reference = _window_of(_cameras(30, seed=1000 + seed), seed=2000 + seed)
    reference.frame["source_id"] = None  # the model's reference knows no cameras
    reference.frame["true_label"] = reference.frame["predicted_label"]
    return build_report(reference, _window_of(current, seed), CLASSES, model_name="m",
                        model_version="1", window_start=START, window_end=END,
                        policy=ReportPolicy(), source_baseline=baseline).summary


def test_one_blurred_camera_of_twenty_is_named_where_the_pooled_window_misses_it() -> None:
    summary = _report(_cameras(40, seed=1, blurred="camera-7"), _cameras(200, seed=2), 1)
    assert summary.drifted_sources == ["camera-7"]
    assert summary.source_drift["camera-7"]["drifted_columns"] == ["sharpness"]
    assert not summary.column_drift["sharpness"]["drifted"]  # diluted 1:19 in the pool
    assert summary.verdict == "drift"
    assert any("1 of 20 sources drifted" in r and "camera-7: sharpness" in r
               for r in summary.reasons), summary.reasons


def test_clean_cameras_that_differ_from_each_other_raise_no_alarm() -> None:
    flagged = []
    for seed in range(20):  # 20 clean windows, 20 cameras, six columns each
        summary = _report(_cameras(40, seed=10 + seed), _cameras(200, seed=100 + seed), seed)
        flagged += summary.drifted_sources
    assert len(flagged) <= 1, flagged


def test_small_and_new_sources_are_said_as_such_and_not_tested() -> None:
    current = pd.concat([_cameras(40, seed=3), pd.DataFrame(
        {**{c: np.full(5, 10.0) for c in SOURCE_COLUMNS}, "source_id": ["tiny"] * 5})],
        ignore_index=True)
    baseline = _cameras(200, seed=4)
    baseline = baseline[baseline["source_id"] != "camera-3"]  # camera-3 is new
    results = source_drift(current, baseline, min_rows=30, alpha=0.01, min_wasserstein=0.2)
    assert results["tiny"]["status"] == "too_small" and results["tiny"]["rows"] == 5
    assert results["camera-3"]["status"] == "no_baseline"
    assert results["camera-3"]["baseline_rows"] == 0 and "columns" not in results["camera-3"]
    tested = [s for s, r in results.items() if "columns" in r]
    assert len(tested) == 19
    # the level is split over the 19 sources tested and their six columns
    level = results["camera-0"]["columns"]["sharpness"]["threshold"]
    assert np.isclose(level, 0.01 / (19 * len(SOURCE_COLUMNS)))


def test_a_window_without_sources_is_judged_as_before() -> None:
    from monitor.report import build_report

    reference, current = window(600, seed=0, labeled=1.0), window(400, seed=1)
    plain = build_report(reference, current, CLASSES, model_name="m", model_version="1",
                         window_start=START, window_end=END)
    current.frame["source_id"] = None
    with_column = build_report(reference, current, CLASSES, model_name="m", model_version="1",
                               window_start=START, window_end=END,
                               source_baseline=pd.DataFrame(columns=["source_id"]))
    assert plain.summary.column_drift == with_column.summary.column_drift
    assert with_column.summary.source_drift == {}
