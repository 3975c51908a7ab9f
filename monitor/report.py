"""One monitoring report: a production window against its model version's reference.

Evidently computes per-column drift (DataDriftPreset on the quality features, predicted
label and confidence) and, on the labeled part of the window, classification quality
(ClassificationPreset). vidmon's own statistics sit beside them: embedding drift, prior
shift and per-class embedding drift, and accuracy estimated from calibrated confidences.
The HTML page shows vidmon's summary with the Evidently reports embedded below it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from monitor.drift import (
    DriftResult,
    class_frequencies,
    embedding_drift,
    estimated_accuracy,
    fit_confidence_calibration,
    homogeneity,
    label_shift,
    per_class_embedding_drift,
)
from monitor.estimation import AccuracyEstimator, Estimate, with_interval
from monitor.estimation.base import window_outputs
from monitor.estimation.labeled import importance_weighted_accuracy, uniform_accuracy
from monitor.features import FEATURE_NAMES
from monitor.report_page import render_html
from monitor.store.records import Window

DRIFT_COLUMNS: tuple[str, ...] = (*FEATURE_NAMES, "confidence", "predicted_label")
# Methods whose score is a p-value (drift below the threshold); others are distances.
P_VALUE_METHODS = frozenset({"ks", "chisquare", "z", "fisher_exact", "mannw", "t_test",
                             "chi2_two_sample"})
# The class-mix test of the predicted label: Evidently's "chisquare" takes the reference's
# shares as exact, so a reference of a few hundred rows or fewer flags same-distribution
# windows (see monitor.drift.classes.homogeneity); this one is registered with Evidently.
CLASS_MIX_TEST = "chi2_two_sample"


@dataclass(frozen=True)
class ReportPolicy:
    """Thresholds of a report's verdict.

    ``alpha`` bounds the chance that a window drawn from the reference distribution is
    called drift: half goes to the embedding test, half is split over the column tests
    (Bonferroni), so one strongly drifted column is enough and a dozen clean ones do not
    add up to false alarms.
    """

    alpha: float = 0.05
    min_rows: int = 30
    per_class_min_rows: int = 30


@dataclass
class ReportSummary:
    """What one report found; stored as one row, served as JSON."""

    model_name: str
    model_version: str
    window_start: datetime
    window_end: datetime
    rows: int
    labeled_rows: int
    reference_rows: int
    verdict: str
    reasons: list[str] = field(default_factory=list)
    drift_share: float | None = None
    column_drift: dict[str, dict[str, Any]] = field(default_factory=dict)
    embedding_drift: dict[str, Any] | None = None
    label_shift: dict[str, Any] | None = None
    per_class_drift: dict[str, dict[str, Any]] = field(default_factory=dict)
    class_frequencies: dict[str, dict[str, float]] = field(default_factory=dict)
    estimated_accuracy: float | None = None
    realized_accuracy: float | None = None
    macro_f1: float | None = None
    reference_accuracy: float | None = None
    # Every label-free estimator's estimate with its interval; the headline one is
    # ``estimate_method``'s (``combined`` when the version has fitted estimators).
    accuracy_estimates: dict[str, dict[str, Any]] = field(default_factory=dict)
    estimate_method: str | None = None
    estimated_accuracy_low: float | None = None
    estimated_accuracy_high: float | None = None
    # Accuracy from labels: importance-weighted over the predictions the labeling queue
    # considered, else the labeled rows taken as a uniform sample.
    realized_method: str | None = None
    realized_accuracy_low: float | None = None
    realized_accuracy_high: float | None = None
    queue_considered: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = asdict(self)
        data["window_start"] = self.window_start.isoformat()
        data["window_end"] = self.window_end.isoformat()
        return data


@dataclass(frozen=True)
class MonitoringReport:
    """A report's summary, its Evidently snapshots (JSON) and its HTML page; ``snapshots``
    keeps the Evidently objects for an Evidently workspace (not stored by vidmon)."""

    summary: ReportSummary
    snapshot_json: str
    html: str
    snapshots: dict[str, Any] = field(default_factory=dict)


# A class-mix test needs this many reference rows per class: with fewer, a class the
# reference saw once or never makes any window look drifted (chi-square's rule of thumb
# of five expected per cell).
ROWS_PER_CLASS = 5


def _drift_columns(reference: pd.DataFrame, current: pd.DataFrame, min_rows: int,
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


def _column_drift(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-column score, method, threshold and verdict from a DataDriftPreset snapshot."""
    columns = {}
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if not config["type"].endswith("ValueDrift"):
            continue
        score, threshold, method = float(metric["value"]), float(config["threshold"]), config["method"]
        is_p_value = method in P_VALUE_METHODS or "p_value" in method
        drifted = score < threshold if is_p_value else score >= threshold
        columns[config["column"]] = {"score": score, "method": method, "threshold": threshold,
                                     "drifted": bool(drifted)}
    return columns


def _class_mix_test(reference: pd.Series, current: pd.Series, feature_type: Any,
                    threshold: float) -> tuple[float, bool]:
    """Evidently's stattest signature over :func:`homogeneity`; undefined (NaN, stored as
    null and not a drift) when one class is all there is, as Evidently's own test is."""
    keys = sorted(set(reference.dropna()) | set(current.dropna()))
    if len(keys) < 2:
        return float("nan"), False
    counts = np.array([[int((reference == k).sum()) for k in keys],
                       [int((current == k).sum()) for k in keys]])
    p_value = homogeneity(counts)[1]
    return p_value, p_value < threshold


def _register_class_mix_test() -> None:
    """Make :data:`CLASS_MIX_TEST` a method name Evidently resolves (registering again
    replaces the entry with the same one)."""
    from evidently.legacy.calculations.stattests import registry
    from evidently.legacy.core import ColumnType

    registry.register_stattest(
        registry.StatTest(name=CLASS_MIX_TEST, display_name="two-sample chi-square p_value",
                          allowed_feature_types=[ColumnType.Categorical]),
        default_impl=_class_mix_test)


def _evidently_drift(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], threshold: float,
    timestamp: datetime,
):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    _register_class_mix_test()
    definition = DataDefinition(
        numerical_columns=[c for c in columns if c != "predicted_label"],
        categorical_columns=[c for c in columns if c == "predicted_label"])
    preset = DataDriftPreset(columns=columns, num_method="ks", cat_method=CLASS_MIX_TEST,
                             threshold=threshold)
    # Constant columns (a fixed fps or frame size) are kept: a jump from one constant to
    # another is drift. Evidently's summary statistics divide by their zero spread.
    with np.errstate(invalid="ignore", divide="ignore"):
        return Report([preset]).run(
            Dataset.from_pandas(current[columns], data_definition=definition),
            Dataset.from_pandas(reference[columns], data_definition=definition),
            timestamp=timestamp)


def _evidently_classification(reference: pd.DataFrame, labeled: pd.DataFrame,
                              timestamp: datetime):
    from evidently import DataDefinition, Dataset, MulticlassClassification, Report
    from evidently.presets import ClassificationPreset

    columns = ["true_label", "predicted_label"]
    definition = DataDefinition(
        categorical_columns=columns,
        classification=[MulticlassClassification(target="true_label",
                                                  prediction_labels="predicted_label")])
    return Report([ClassificationPreset()]).run(
        Dataset.from_pandas(labeled[columns], data_definition=definition),
        Dataset.from_pandas(reference[columns], data_definition=definition),
        timestamp=timestamp)


def macro_f1(true: np.ndarray, predicted: np.ndarray) -> float:
    """Unweighted mean F1 over the classes present in either array."""
    scores = []
    for label in np.union1d(true, predicted):
        tp = np.sum((predicted == label) & (true == label))
        precision_den, recall_den = np.sum(predicted == label), np.sum(true == label)
        precision = tp / precision_den if precision_den else 0.0
        recall = tp / recall_den if recall_den else 0.0
        scores.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    return float(np.mean(scores))


def _result(result: DriftResult | None) -> dict[str, Any] | None:
    return None if result is None else asdict(result)


def label_free_estimates(reference: Window, current: Window, label_names: tuple[str, ...],
                         estimator: AccuracyEstimator | None) -> tuple[str, dict[str, Estimate]]:
    """Every label-free estimate of the window and the headline method: the fitted
    estimators when the version has them, else CBPE calibrated on the stored reference
    (its interval then holds only the window's sampling error)."""
    if estimator is not None:
        return "combined", estimator.estimate(
            window_outputs(current.frame, current.embeddings, label_names))
    ref = reference.frame
    calibration = fit_confidence_calibration(
        ref["confidence"].to_numpy(), (ref["true_label"] == ref["predicted_label"]).to_numpy())
    value = estimated_accuracy(calibration, current.frame["confidence"].to_numpy())
    return "cbpe", {"cbpe": with_interval("cbpe", value, 0.0, len(current))}


def labeled_estimate(frame: pd.DataFrame) -> tuple[Estimate | None, int]:
    """Accuracy from the window's labels, and how many predictions the queue considered."""
    considered = frame[frame["queue_inclusion"].notna()] if "queue_inclusion" in frame \
        else frame.iloc[:0]
    if len(considered):
        labeled = considered["true_label"].notna().to_numpy()
        wrong = (considered["true_label"] != considered["predicted_label"]).to_numpy()
        estimate = importance_weighted_accuracy(
            considered["queue_p_wrong"].to_numpy(dtype=float),
            considered["queue_inclusion"].to_numpy(dtype=float),
            considered["queue_selected"].fillna(False).to_numpy(dtype=bool), labeled, wrong)
        if estimate is not None:
            return estimate, len(considered)
    labeled = frame[frame["true_label"].notna()]
    return uniform_accuracy((labeled["true_label"] == labeled["predicted_label"]).to_numpy()), \
        len(considered)


def build_report(
    reference: Window,
    current: Window,
    label_names: tuple[str, ...],
    *,
    model_name: str,
    model_version: str,
    window_start: datetime,
    window_end: datetime,
    policy: ReportPolicy = ReportPolicy(),
    estimator: AccuracyEstimator | None = None,
) -> MonitoringReport:
    """Compare ``current`` with ``reference``, decide drift / no drift, and estimate the
    window's accuracy (with ``estimator``, the version's fitted estimators, when given)."""
    ref, cur = reference.frame, current.frame
    labeled = cur[cur["true_label"].notna()]
    summary = ReportSummary(model_name, model_version, window_start, window_end, rows=len(cur),
                            labeled_rows=len(labeled), reference_rows=len(ref),
                            verdict="insufficient_data")
    if len(cur) < policy.min_rows or len(ref) < policy.min_rows:
        summary.reasons.append(f"needs {policy.min_rows} rows on each side, has {len(cur)} "
                               f"in the window and {len(ref)} in the reference")
        return MonitoringReport(summary, json.dumps({}), render_html(summary, {}))

    columns, untested = _drift_columns(ref, cur, policy.min_rows, len(label_names))
    column_level = policy.alpha / 2 / max(len(columns), 1)
    drift_snapshot = _evidently_drift(ref, cur, columns, column_level, window_end)
    summary.column_drift = _column_drift(drift_snapshot.dict())
    drifted = [c for c, v in summary.column_drift.items() if v["drifted"]]
    summary.drift_share = len(drifted) / max(len(summary.column_drift), 1)
    embedding = embedding_drift(reference.embeddings, current.embeddings, alpha=policy.alpha / 2)
    summary.embedding_drift = _result(embedding)
    summary.label_shift = _result(label_shift(ref["predicted_label"], cur["predicted_label"],
                                              label_names, policy.alpha))
    summary.per_class_drift = {c: asdict(r) for c, r in per_class_embedding_drift(
        reference.embeddings, ref["predicted_label"].to_numpy(), current.embeddings,
        cur["predicted_label"].to_numpy(), min_rows=policy.per_class_min_rows,
        alpha=policy.alpha).items()}
    summary.class_frequencies = {
        "reference": class_frequencies(ref["predicted_label"], label_names),
        "current": class_frequencies(cur["predicted_label"], label_names)}

    summary.reference_accuracy = float((ref["true_label"] == ref["predicted_label"]).mean())
    method, estimates = label_free_estimates(reference, current, label_names, estimator)
    summary.accuracy_estimates = {m: e.to_dict() for m, e in estimates.items()}
    headline = estimates[method]
    summary.estimate_method = method
    summary.estimated_accuracy = headline.value
    summary.estimated_accuracy_low, summary.estimated_accuracy_high = headline.low, headline.high
    realized, summary.queue_considered = labeled_estimate(cur)
    if realized is not None:
        summary.realized_method = realized.method
        summary.realized_accuracy = realized.value
        summary.realized_accuracy_low, summary.realized_accuracy_high = realized.low, realized.high
    snapshots = {"data_drift": drift_snapshot}
    if len(labeled):
        true, predicted = labeled["true_label"].to_numpy(), labeled["predicted_label"].to_numpy()
        summary.macro_f1 = macro_f1(true, predicted)
        snapshots["classification"] = _evidently_classification(ref, labeled, window_end)

    if embedding.drifted:
        summary.reasons.append(f"embedding drift p={embedding.p_value:.4f} < {embedding.alpha}")
    if drifted:
        summary.reasons.append(f"{len(drifted)}/{len(summary.column_drift)} columns drifted at "
                               f"p < {column_level:.2g} ({', '.join(drifted)})")
    summary.verdict = "drift" if summary.reasons else "no_drift"
    summary.reasons.extend(untested)  # said, but not a reason for the verdict
    snapshot_json = json.dumps({name: s.dict() for name, s in snapshots.items()}, default=str)
    return MonitoringReport(summary, snapshot_json, render_html(summary, snapshots), snapshots)
