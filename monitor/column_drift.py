"""Per-column drift: which columns can be tested and how, each column's test (a p-value and
an effect size, see :mod:`monitor.drift.effect`), and Evidently's DataDriftPreset run with
those same tests registered, so its per-column detail flags what vidmon's verdict flags.

Like is compared with like:

- **unit**: pixel features and confidence describe a clip; frame count, duration, fps,
  width and height describe the file, so they are compared once per video (a 31-second
  upload is eight clips but one file: counted eight times, its duration would outweigh
  every short video's);
- **kind**: a column whose reference holds at most :data:`FEW_VALUES` distinct values (one
  camera's width, two frame rates) is compared as categories, the reference's values and
  ``other``, by the class-mix test and PSI; as a number its spread is zero or nearly, and
  any move of it would be an effect of hundreds of thousands of standard deviations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from monitor.drift import homogeneity, normalized_wasserstein, psi
from monitor.features import FILE_FEATURES, PIXEL_FEATURES

CLIP_COLUMNS: tuple[str, ...] = (*PIXEL_FEATURES, "confidence")
VIDEO_COLUMNS: tuple[str, ...] = FILE_FEATURES
FEATURE_COLUMNS: tuple[str, ...] = (*CLIP_COLUMNS, *VIDEO_COLUMNS)
DRIFT_COLUMNS: tuple[str, ...] = (*FEATURE_COLUMNS, "predicted_label")
# The class-mix test of the predicted label: Evidently's "chisquare" takes the reference's
# shares as exact, so a reference of a few hundred rows or fewer flags same-distribution
# windows (see monitor.drift.classes.homogeneity); vidmon registers its own with Evidently.
CLASS_MIX_TEST = "chi2_two_sample"
NUMERIC_TEST = "ks"
FEW_VALUES = 5  # a reference with this many distinct values or fewer: compared as categories
OTHER = "other"  # the category of a value the reference never had

# A class-mix test needs this many reference rows per class: with fewer, a class the
# reference saw once or never makes any window look drifted (chi-square's rule of thumb
# of five expected per cell).
ROWS_PER_CLASS = 5


@dataclass(frozen=True)
class ColumnPlan:
    """How one column is tested: per ``clip`` or per ``video``, as ``numerical`` or
    ``categorical`` values."""

    name: str
    unit: str
    kind: str


def per_video(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per video (its first): a video's clips share its file's columns. Rows
    without a video id (raw clips, profiles made before video ids) are videos of their
    own."""
    if "video_id" not in frame or frame["video_id"].isna().all():
        return frame
    known = frame["video_id"].notna()
    first = ~frame["video_id"].duplicated() | ~known
    return frame[first]


def _few_valued(values: pd.Series) -> bool:
    return values.dropna().nunique() <= FEW_VALUES


def drift_columns(reference: pd.DataFrame, current: pd.DataFrame, min_rows: int,
                  n_classes: int) -> tuple[list[ColumnPlan], list[str]]:
    """The columns with enough values on both sides (file metadata is missing for raw
    clips; per-video columns count videos), how each is tested, and why a column with
    values was left untested."""
    plans, untested = [], []
    videos = (per_video(reference), per_video(current))
    for c in DRIFT_COLUMNS:
        unit = "video" if c in VIDEO_COLUMNS else "clip"
        ref, cur = videos if unit == "video" else (reference, current)
        ref_rows, cur_rows = ref[c].notna().sum(), cur[c].notna().sum()
        if ref_rows < min_rows or cur_rows < min_rows:
            if unit == "video" and min(ref_rows, cur_rows) > 0:
                untested.append(f"{c} not tested: {ref_rows} reference and {cur_rows} window "
                                f"videos have it, the test needs {min_rows} a side")
            continue
        if c == "predicted_label":
            if ref_rows < ROWS_PER_CLASS * n_classes:
                untested.append(f"predicted_label not tested: {ref_rows} reference rows for "
                                f"{n_classes} classes, a class-mix test needs "
                                f"{ROWS_PER_CLASS * n_classes}")
                continue
            plans.append(ColumnPlan(c, unit, "categorical"))
            continue
        plans.append(ColumnPlan(c, unit, "categorical" if _few_valued(ref[c])
                                else "numerical"))
    return plans, untested


def _class_counts(reference: pd.Series, current: pd.Series) -> np.ndarray:
    """(2, classes) counts over the classes seen on either side."""
    keys = sorted(set(reference.dropna()) | set(current.dropna()))
    return np.array([[int((reference == k).sum()) for k in keys],
                     [int((current == k).sum()) for k in keys]]).reshape(2, len(keys))


def as_categories(reference: pd.Series, current: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Both sides as the reference's distinct values, anything else as ``other``."""
    ref, cur = reference.dropna(), current.dropna()
    known = set(ref.unique().tolist())
    return (ref.astype(str),
            cur.map(lambda v: str(v) if v in known else OTHER).astype(str))


def numeric_test(reference: pd.Series, current: pd.Series, level: float,
                 min_effect: float) -> dict[str, Any]:
    """KS p-value and normalised Wasserstein effect of one numerical column; drift needs
    both (NaN p-value: untested)."""
    ref, cur = reference.dropna().to_numpy(float), current.dropna().to_numpy(float)
    p_value = float(ks_2samp(ref, cur).pvalue) if len(ref) and len(cur) else float("nan")
    effect = normalized_wasserstein(ref, cur)
    return _column_result(NUMERIC_TEST, p_value, level, effect, "wasserstein_normed",
                          min_effect)


def class_mix_test(reference: pd.Series, current: pd.Series, level: float,
                   min_effect: float) -> dict[str, Any]:
    """Two-sample chi-square p-value (:func:`homogeneity`) and PSI of the class mix; drift
    needs both. Undefined (NaN) when one class is all either side has."""
    counts = _class_counts(reference, current)
    p_value = homogeneity(counts)[1]
    effect = psi(counts[0], counts[1]) if counts.shape[1] else float("nan")
    return _column_result(CLASS_MIX_TEST, p_value, level, effect, "psi", min_effect)


def category_test(reference: pd.Series, current: pd.Series, level: float,
                  min_effect: float) -> dict[str, Any]:
    """A few-valued column as categories (:func:`as_categories`): the class-mix test and
    PSI. A constant reference and a window that moved off the constant is one cell each
    side: chi-square's p is 0 and PSI about 18, a finite effect."""
    ref, cur = as_categories(reference, current)
    counts = _class_counts(ref, cur)
    if counts.shape[1] == 1:  # both sides on the one value: nothing moved
        return _column_result(CLASS_MIX_TEST, 1.0, level, 0.0, "psi", min_effect)
    return class_mix_test(ref, cur, level, min_effect)


def column_test(plan: ColumnPlan, reference: pd.DataFrame, current: pd.DataFrame,
                level: float, min_wasserstein: float, min_psi: float) -> dict[str, Any]:
    """The test ``plan`` says for one column, on clips or videos as the plan says."""
    if plan.unit == "video":
        reference, current = per_video(reference), per_video(current)
    ref, cur = reference[plan.name], current[plan.name]
    if plan.name == "predicted_label":
        result = class_mix_test(ref, cur, level, min_psi)
    elif plan.kind == "categorical":
        result = category_test(ref, cur, level, min_psi)
    else:
        result = numeric_test(ref, cur, level, min_wasserstein)
    return {**result, "unit": plan.unit, "kind": plan.kind,
            "rows": [int(ref.notna().sum()), int(cur.notna().sum())]}


# What a source's test compares: the image quality of its clips (the model's confidence
# depends on the version, a file's size and rate on the uploader).
SOURCE_COLUMNS: tuple[str, ...] = PIXEL_FEATURES


def source_drift(current: pd.DataFrame, baseline: pd.DataFrame, min_rows: int, alpha: float,
                 min_wasserstein: float) -> dict[str, dict[str, Any]]:
    """Each source of ``current`` (its ``source_id``) against its own ``baseline`` rows,
    column by column (KS and normalised Wasserstein, as for the whole window). ``alpha``
    is split evenly over every (source, column) test, so fifty clean cameras raise a false
    alarm no more often than one. A source with fewer than ``min_rows`` rows in the window
    is ``too_small``; one with fewer in its baseline has ``no_baseline`` (yet)."""
    results: dict[str, dict[str, Any]] = {}
    testable = []
    for source in sorted(current["source_id"].dropna().unique()):
        rows = int((current["source_id"] == source).sum())
        base = int((baseline["source_id"] == source).sum()) if len(baseline) else 0
        results[source] = {"rows": rows, "baseline_rows": base, "drifted_columns": []}
        if rows < min_rows:
            results[source]["status"] = "too_small"
        elif base < min_rows:
            results[source]["status"] = "no_baseline"
        else:
            testable.append(source)
    level = alpha / max(len(testable) * len(SOURCE_COLUMNS), 1)
    for source in testable:
        cur = current[current["source_id"] == source]
        base = baseline[baseline["source_id"] == source]
        columns = {c: numeric_test(base[c], cur[c], level, min_wasserstein)
                   for c in SOURCE_COLUMNS
                   if min(base[c].notna().sum(), cur[c].notna().sum()) >= min_rows}
        drifted = [c for c, r in columns.items() if r["drifted"]]
        results[source].update(status="drifted" if drifted else "no_drift",
                               drifted_columns=drifted, columns=columns)
    return results


def _column_result(method: str, p_value: float, level: float, effect: float,
                   effect_method: str, min_effect: float) -> dict[str, Any]:
    defined = not np.isnan(p_value)
    return {"score": p_value if defined else None, "method": method, "threshold": level,
            "effect": None if np.isnan(effect) else effect, "effect_method": effect_method,
            "min_effect": min_effect,
            "drifted": bool(defined and p_value < level and effect >= min_effect)
            if defined else None}


def _evidently_test(name: str, kind: str, min_effect: float) -> str:
    """Register with Evidently the test vidmon decides a column by (p-value and effect), so
    its page flags the columns vidmon's verdict flags; returns the registered name."""
    from evidently.legacy.calculations.stattests import registry
    from evidently.legacy.core import ColumnType

    decide = {"num": numeric_test, "cat": class_mix_test, "few": category_test}[kind]
    registered = f"vidmon_{name}_{kind}_effect_{min_effect:g}"

    def test(reference: pd.Series, current: pd.Series, feature_type: Any,
             threshold: float) -> tuple[float, bool]:
        result = decide(reference, current, threshold, min_effect)
        return (float("nan") if result["score"] is None else result["score"],
                bool(result["drifted"]))

    column_type = ColumnType.Numerical if kind == "num" else ColumnType.Categorical
    display = {"num": f"KS p_value, normalised Wasserstein >= {min_effect:g}",
               "cat": f"two-sample chi-square p_value, PSI >= {min_effect:g}",
               "few": f"reference's values + other: chi-square p_value, PSI >= "
                      f"{min_effect:g}"}[kind]
    registry.register_stattest(
        registry.StatTest(name=registered, display_name=display,
                          allowed_feature_types=[column_type]), default_impl=test)
    return registered


def evidently_drift(
    reference: pd.DataFrame, current: pd.DataFrame, plans: list[ColumnPlan],
    feature_level: float, prior_level: float, min_wasserstein: float, min_psi: float,
    timestamp: datetime,
):
    """Evidently's DataDriftPreset over the ``plans``' columns (all of one unit: the
    frames are clips or videos), deciding each by vidmon's own tests at their levels and
    minimum effects; None when there is no column to run."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    if not plans:
        return None
    columns = [p.name for p in plans]
    methods = {p.name: _evidently_test(CLASS_MIX_TEST, "cat", min_psi)
               if p.name == "predicted_label" else
               _evidently_test(NUMERIC_TEST, "few", min_psi) if p.kind == "categorical" else
               _evidently_test(NUMERIC_TEST, "num", min_wasserstein) for p in plans}
    definition = DataDefinition(
        numerical_columns=[p.name for p in plans if p.kind == "numerical"],
        categorical_columns=[p.name for p in plans if p.kind == "categorical"])
    preset = DataDriftPreset(
        columns=columns, per_column_method=methods,
        per_column_threshold={c: prior_level if c == "predicted_label" else feature_level
                              for c in columns},
        # Evidently's dataset-level line follows vidmon's rule for columns: one drifted
        # column is enough (its level already counts the other columns).
        drift_share=1.0 / (len(columns) + 1))
    # Constant columns (a fixed fps or frame size) are kept: a jump from one constant to
    # another is drift. Evidently's summary statistics divide by their zero spread.
    frames = [frame[columns].copy() for frame in (current, reference)]
    for frame in frames:  # categories as text, as the test sees them
        for p in plans:
            if p.kind == "categorical" and p.name != "predicted_label":
                frame[p.name] = frame[p.name].map(lambda v: None if pd.isna(v) else str(v))
    with np.errstate(invalid="ignore", divide="ignore"):
        return Report([preset]).run(
            Dataset.from_pandas(frames[0], data_definition=definition),
            Dataset.from_pandas(frames[1], data_definition=definition),
            timestamp=timestamp)
