"""Per-column drift: which columns can be tested, each column's test (a p-value and an
effect size, see :mod:`monitor.drift.effect`), and Evidently's DataDriftPreset run with
those same tests registered, so its page flags what vidmon's verdict flags."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from monitor.drift import homogeneity, normalized_wasserstein, psi
from monitor.features import FEATURE_NAMES

FEATURE_COLUMNS: tuple[str, ...] = (*FEATURE_NAMES, "confidence")
DRIFT_COLUMNS: tuple[str, ...] = (*FEATURE_COLUMNS, "predicted_label")
# The class-mix test of the predicted label: Evidently's "chisquare" takes the reference's
# shares as exact, so a reference of a few hundred rows or fewer flags same-distribution
# windows (see monitor.drift.classes.homogeneity); vidmon registers its own with Evidently.
CLASS_MIX_TEST = "chi2_two_sample"
NUMERIC_TEST = "ks"

# A class-mix test needs this many reference rows per class: with fewer, a class the
# reference saw once or never makes any window look drifted (chi-square's rule of thumb
# of five expected per cell).
ROWS_PER_CLASS = 5


def drift_columns(reference: pd.DataFrame, current: pd.DataFrame, min_rows: int,
                  n_classes: int) -> tuple[list[str], list[str]]:
    """Columns with enough values on both sides (file metadata is missing for raw clips),
    and why a column with values was left untested."""
    columns, untested = [], []
    for c in DRIFT_COLUMNS:
        ref_rows, cur_rows = reference[c].notna().sum(), current[c].notna().sum()
        if ref_rows < min_rows or cur_rows < min_rows:
            continue
        if c == "predicted_label" and ref_rows < ROWS_PER_CLASS * n_classes:
            untested.append(f"predicted_label not tested: {ref_rows} reference rows for "
                            f"{n_classes} classes, a class-mix test needs "
                            f"{ROWS_PER_CLASS * n_classes}")
            continue
        columns.append(c)
    return columns, untested


def _class_counts(reference: pd.Series, current: pd.Series) -> np.ndarray:
    """(2, classes) counts over the classes seen on either side."""
    keys = sorted(set(reference.dropna()) | set(current.dropna()))
    return np.array([[int((reference == k).sum()) for k in keys],
                     [int((current == k).sum()) for k in keys]]).reshape(2, len(keys))


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

    decide = numeric_test if kind == "num" else class_mix_test
    registered = f"vidmon_{name}_effect_{min_effect:g}"

    def test(reference: pd.Series, current: pd.Series, feature_type: Any,
             threshold: float) -> tuple[float, bool]:
        result = decide(reference, current, threshold, min_effect)
        return (float("nan") if result["score"] is None else result["score"],
                bool(result["drifted"]))

    column_type = ColumnType.Numerical if kind == "num" else ColumnType.Categorical
    registry.register_stattest(
        registry.StatTest(name=registered, display_name=(
            f"KS p_value, normalised Wasserstein >= {min_effect:g}" if kind == "num" else
            f"two-sample chi-square p_value, PSI >= {min_effect:g}"),
                          allowed_feature_types=[column_type]), default_impl=test)
    return registered


def evidently_drift(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], feature_level: float,
    prior_level: float, min_wasserstein: float, min_psi: float, timestamp: datetime,
):
    """Evidently's DataDriftPreset over ``columns``, deciding each by vidmon's own tests at
    their levels and minimum effects."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(
        numerical_columns=[c for c in columns if c != "predicted_label"],
        categorical_columns=[c for c in columns if c == "predicted_label"])
    preset = DataDriftPreset(
        columns=columns, num_method=_evidently_test(NUMERIC_TEST, "num", min_wasserstein),
        cat_method=_evidently_test(CLASS_MIX_TEST, "cat", min_psi),
        num_threshold=feature_level, cat_threshold=prior_level)
    # Constant columns (a fixed fps or frame size) are kept: a jump from one constant to
    # another is drift. Evidently's summary statistics divide by their zero spread.
    with np.errstate(invalid="ignore", divide="ignore"):
        return Report([preset]).run(
            Dataset.from_pandas(current[columns], data_definition=definition),
            Dataset.from_pandas(reference[columns], data_definition=definition),
            timestamp=timestamp)
