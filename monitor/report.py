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

from monitor.column_drift import (
    column_test,
    drift_columns,
    evidently_drift,
    per_video,
    source_drift,
)
from monitor.drift import (
    MIN_AUC,
    MIN_PSI,
    MIN_WASSERSTEIN,
    DriftResult,
    class_frequencies,
    embedding_drift_within_and_pooled,
    label_shift,
    per_class_embedding_drift,
)
from monitor.estimation import AccuracyEstimator, Estimate
from monitor.estimation.base import window_outputs
from monitor.estimation.judgment import EstimationPolicy, LabelFreeAccuracy, label_free_accuracy
from monitor.estimation.labeled import importance_weighted_accuracy, uniform_accuracy
from monitor.report_page import render_html
from monitor.store.records import Window

# The families of tests a verdict can be made of: the quality features and confidence
# (one column each), the predicted class mix (prior shift), the embeddings within classes,
# and the embeddings of each predicted class on its own.
VERDICT_TESTS: tuple[str, ...] = ("features", "prior", "embedding", "per_class")


@dataclass(frozen=True)
class ReportPolicy:
    """Thresholds of a report's verdict.

    A test flags drift only when its p-value is below its level *and* its effect size
    reaches the minimum (see :mod:`monitor.drift.effect`): the p-value keeps clean small
    windows quiet, the effect keeps clean large ones quiet, so a verdict means the same at
    200 rows and at a million. ``alpha`` bounds the chance that a window drawn from the
    reference distribution is called drift: it is split evenly over the families in
    ``verdict_tests``, and within a family over its columns or classes (Bonferroni), so one
    strongly drifted column is enough and a dozen clean ones do not add up to false alarms.
    Families left out of the verdict are still tested and shown.
    """

    alpha: float = 0.05
    min_rows: int = 30
    per_class_min_rows: int = 30
    verdict_tests: tuple[str, ...] = ("features", "prior", "embedding")
    min_wasserstein: float = MIN_WASSERSTEIN
    min_psi: float = MIN_PSI
    min_auc: float = MIN_AUC
    # Accuracy is at risk when its interval's upper end (from labels, else the label-free
    # estimate) falls below the reference accuracy minus this.
    accuracy_drop: float = 0.05
    estimation: EstimationPolicy = EstimationPolicy()

    def __post_init__(self) -> None:
        unknown = set(self.verdict_tests) - set(VERDICT_TESTS)
        if unknown or not self.verdict_tests:
            raise ValueError(f"verdict_tests must be some of {VERDICT_TESTS}, got "
                             f"{self.verdict_tests}")

    @property
    def family_alpha(self) -> float:
        """Each family's share of ``alpha``."""
        return self.alpha / len(self.verdict_tests)


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
    # Rows the statistical tests ran on, when they ran on a uniform sample of a larger
    # window (or reference); None when they saw every row.
    sample_rows: int | None = None
    reference_sample_rows: int | None = None
    # The second question of a report: is accuracy at risk? ``at_risk`` (labels or the
    # estimate put it below the reference minus the allowed drop), ``ok`` (neither does),
    # ``cannot_estimate`` (no labels that settle it, and the window lies where no
    # label-free number can be trusted: see ``estimate_reason`` and ``labels_needed``).
    accuracy_risk: str = "ok"
    risk_reason: str = ""
    estimable: bool | None = None
    estimate_reason: str = ""
    labels_needed: int | None = None
    domain_auc: float | None = None
    effective_reference_rows: float | None = None
    # Each source (camera, stream, client) of the window against its own recent past, and
    # the ones whose inputs drifted (see column_drift.source_drift).
    source_drift: dict[str, dict[str, Any]] = field(default_factory=dict)
    drifted_sources: list[str] = field(default_factory=list)

    @property
    def input_drift(self) -> bool:
        """Whether the inputs drifted (the verdict); accuracy is the other question."""
        return self.verdict == "drift"

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


def _shares(counts: dict[str, int], classes: tuple[str, ...]) -> dict[str, float]:
    """Each class's share of a window from its counts."""
    total = max(sum(counts.values()), 1)
    return {c: counts.get(c, 0) / total for c in classes}


def _sample_notes(reference: Window, current: Window, summary: ReportSummary) -> list[str]:
    """Say which side's tests ran on a sample, and record the sample sizes."""
    notes = []
    for name, window, field_name in (("window", current, "sample_rows"),
                                     ("reference", reference, "reference_sample_rows")):
        if window.sampled:
            setattr(summary, field_name, len(window))
            notes.append(f"{name} tests on {len(window):,} of {window.total_rows:,} rows (a "
                         "uniform sample drawn by the database); counts, class mix, realized "
                         "accuracy and label coverage over every row")
    return notes


def _verdict(summary: ReportSummary, policy: ReportPolicy, features: list[str],
             feature_level: float) -> tuple[str, list[str]]:
    """The verdict and its reasons from the families' results: drift when a family in
    ``policy.verdict_tests`` found it, insufficient data when none of them could be tested;
    families outside the verdict that found drift are said as such."""
    columns, embedding = summary.column_drift, summary.embedding_drift or {}
    found: dict[str, str] = {}
    flagged = [c for c in features if columns[c]["drifted"]]
    if flagged:
        found["features"] = (
            f"{len(flagged)}/{len(features)} feature columns drifted (p < {feature_level:.2g} "
            f"and normalised Wasserstein >= {policy.min_wasserstein:g}, or PSI >= "
            f"{policy.min_psi:g} for few-valued columns): " + ", ".join(
                f"{c} per {columns[c].get('unit', 'clip')} "
                f"({'W' if columns[c]['effect_method'] == 'wasserstein_normed' else 'PSI'}="
                f"{columns[c]['effect']:.2f})" for c in flagged))
    prior = columns.get("predicted_label")
    if prior and prior["drifted"]:
        found["prior"] = (f"predicted class mix changed: p={prior['score']:.2g} < "
                          f"{prior['threshold']:.2g}, PSI={prior['effect']:.2f} >= "
                          f"{policy.min_psi:g}")
    if embedding.get("drifted"):
        ways = [f"{name} (p={part['p_value']:.4f} < {part['alpha']:.2g}, witness AUC="
                f"{part['effect']:.2f} >= {policy.min_auc:g})"
                for name, part in (("within classes", embedding.get("within_classes")),
                                   ("pooled", embedding.get("pooled")))
                if part and part.get("drifted")]
        found["embedding"] = "embeddings moved " + " and ".join(ways)
    if summary.drifted_sources:
        tested_sources = [s for s, r in summary.source_drift.items()
                          if r["status"] in ("drifted", "no_drift")]
        named = "; ".join(f"{s}: {', '.join(summary.source_drift[s]['drifted_columns'])}"
                          for s in summary.drifted_sources)
        found["features"] = "; ".join(filter(None, (found.get("features"), (
            f"{len(summary.drifted_sources)} of {len(tested_sources)} sources drifted "
            f"against their own recent past: {named}"))))
    classes = [c for c, r in summary.per_class_drift.items() if r["drifted"]]
    if classes:
        found["per_class"] = (f"embeddings moved within {len(classes)} of the "
                              f"{len(summary.per_class_drift)} classes tested: ") + ", ".join(
            f"{c} (AUC={summary.per_class_drift[c]['effect']:.2f})" for c in classes)
    tested = {"features": any(columns[c]["drifted"] is not None for c in features)
              or any(r["status"] in ("drifted", "no_drift")
                     for r in summary.source_drift.values()),
              "prior": prior is not None and prior["drifted"] is not None,
              "embedding": bool(embedding), "per_class": bool(summary.per_class_drift)}
    reasons = [found[f] for f in policy.verdict_tests if f in found]
    reasons += [f"not in the verdict: {found[f]}" for f in VERDICT_TESTS
                if f in found and f not in policy.verdict_tests]
    if any(f in found for f in policy.verdict_tests):
        return "drift", reasons
    if not any(tested[f] for f in policy.verdict_tests):
        return "insufficient_data", [*reasons, "none of the verdict's tests could be run"]
    return "no_drift", reasons


def _result(result: DriftResult | None) -> dict[str, Any] | None:
    return None if result is None else asdict(result)


def label_free(reference: Window, current: Window, label_names: tuple[str, ...],
               estimator: AccuracyEstimator | None, policy: EstimationPolicy
               ) -> LabelFreeAccuracy:
    """The window's label-free accuracy judged against the labeled reference rows."""
    return label_free_accuracy(
        window_outputs(reference.frame, reference.embeddings, label_names),
        window_outputs(current.frame, current.embeddings, label_names), estimator, policy)


def accuracy_risk(summary: ReportSummary, drop: float) -> tuple[str, str]:
    """``at_risk``, ``ok`` or ``cannot_estimate``, and why: labels first (their interval's
    upper end below the bar, or lower end above it, settles it), then the label-free
    estimate's upper end."""
    reference = summary.reference_accuracy
    bar = None if reference is None else reference - drop
    realized_high, realized_low = summary.realized_accuracy_high, summary.realized_accuracy_low
    if bar is not None and realized_high is not None and realized_high < bar:
        return "at_risk", (f"labels put accuracy at most {realized_high:.3f}, below the "
                           f"reference {reference:.3f} - {drop:g}")
    if bar is not None and realized_low is not None and realized_low >= bar:
        return "ok", f"labels put accuracy at least {realized_low:.3f}"
    high = summary.estimated_accuracy_high
    if bar is not None and high is not None and high < bar:
        return "at_risk", (f"estimated accuracy at most {high:.3f} without labels, below the "
                           f"reference {reference:.3f} - {drop:g}")
    if summary.estimable is False:
        return "cannot_estimate", (f"{summary.estimate_reason}; label {summary.labels_needed} "
                                   "of its predictions to bound accuracy within 5 points")
    return "ok", ("the label-free estimate keeps above the reference minus the allowed "
                  "drop" if high is not None else "no estimate and no labels that show a drop")


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
    source_baseline: pd.DataFrame | None = None,
) -> MonitoringReport:
    """Compare ``current`` with ``reference``, decide drift / no drift, and estimate the
    window's accuracy (with ``estimator``, the version's fitted estimators, when given).
    With ``source_baseline`` (each source's recent rows before the window), the window's
    sources are also tested each against its own past, on half of the features' level."""
    ref, cur = reference.frame, current.frame
    labeled = cur[cur["true_label"].notna()]
    # Counts, class mix and labels come from the whole window; the tests from its sample.
    whole = cur if current.population is None else current.population.labels
    whole_labeled = whole[whole["true_label"].notna()]
    summary = ReportSummary(model_name, model_version, window_start, window_end,
                            rows=current.total_rows, labeled_rows=len(whole_labeled),
                            reference_rows=reference.total_rows, verdict="insufficient_data")
    notes = _sample_notes(reference, current, summary)
    if len(cur) < policy.min_rows or len(ref) < policy.min_rows:
        summary.reasons.append(f"needs {policy.min_rows} rows on each side, has {len(cur)} "
                               f"in the window and {len(ref)} in the reference")
        return MonitoringReport(summary, json.dumps({}), render_html(summary, {}))

    plans, untested = drift_columns(ref, cur, policy.min_rows, len(label_names))
    features = [p.name for p in plans if p.name != "predicted_label"]
    by_source = (source_baseline is not None and "source_id" in cur
                 and bool(cur["source_id"].notna().any()))
    features_alpha = policy.family_alpha / (2 if by_source else 1)
    feature_level = features_alpha / max(len(features), 1)
    if by_source:
        summary.source_drift = source_drift(cur, source_baseline, policy.min_rows,
                                            features_alpha, policy.min_wasserstein)
        summary.drifted_sources = [s for s, r in summary.source_drift.items()
                                   if r["status"] == "drifted"]

    def level(name: str) -> float:
        return policy.family_alpha if name == "predicted_label" else feature_level

    summary.column_drift = {p.name: column_test(p, ref, cur, level(p.name),
                                                policy.min_wasserstein, policy.min_psi)
                            for p in plans}
    snapshots = {}
    for unit, (ref_rows, cur_rows) in (("clip", (ref, cur)),
                                       ("video", (per_video(ref), per_video(cur)))):
        snapshot = evidently_drift(ref_rows, cur_rows, [p for p in plans if p.unit == unit],
                                   feature_level, policy.family_alpha, policy.min_wasserstein,
                                   policy.min_psi, window_end)
        if snapshot is not None:
            snapshots[f"columns per {unit}"] = snapshot
    untested += [f"{c} not tested: its test is undefined (a single value on both sides); "
                 "not counted as no drift"
                 for c, v in summary.column_drift.items() if v["drifted"] is None]
    tested = [c for c, v in summary.column_drift.items() if v["drifted"] is not None]
    summary.drift_share = (sum(bool(summary.column_drift[c]["drifted"]) for c in tested)
                           / max(len(tested), 1))
    predicted_ref = ref["predicted_label"].to_numpy()
    predicted_cur = cur["predicted_label"].to_numpy()
    embedding = embedding_drift_within_and_pooled(
        reference.embeddings, current.embeddings, alpha=policy.family_alpha,
        min_effect=policy.min_auc, strata=(predicted_ref, predicted_cur))
    summary.embedding_drift = {**asdict(embedding.combined()),
                               "within_classes": asdict(embedding.within),
                               "pooled": asdict(embedding.pooled)}
    summary.label_shift = _result(label_shift(ref["predicted_label"], cur["predicted_label"],
                                              label_names, policy.family_alpha, policy.min_psi))
    summary.per_class_drift = {c: asdict(r) for c, r in per_class_embedding_drift(
        reference.embeddings, predicted_ref, current.embeddings, predicted_cur,
        min_rows=policy.per_class_min_rows, alpha=policy.family_alpha,
        min_effect=policy.min_auc).items()}
    summary.class_frequencies = {
        "reference": class_frequencies(ref["predicted_label"], label_names),
        "current": class_frequencies(cur["predicted_label"], label_names)
        if current.population is None else _shares(current.population.class_counts,
                                                   label_names)}

    summary.reference_accuracy = float((ref["true_label"] == ref["predicted_label"]).mean())
    judged = label_free(reference, current, label_names, estimator, policy.estimation)
    summary.accuracy_estimates = {m: e.to_dict() for m, e in judged.estimates.items()}
    summary.estimable, summary.estimate_reason = judged.estimable, judged.reason
    summary.labels_needed = judged.labels_needed
    summary.domain_auc, summary.effective_reference_rows = (judged.domain_auc,
                                                            judged.effective_rows)
    if judged.estimate is not None:
        headline: Estimate = judged.estimate
        summary.estimate_method = headline.method
        summary.estimated_accuracy = headline.value
        summary.estimated_accuracy_low, summary.estimated_accuracy_high = (headline.low,
                                                                           headline.high)
    realized, summary.queue_considered = labeled_estimate(whole)
    if realized is not None:
        summary.realized_method = realized.method
        summary.realized_accuracy = realized.value
        summary.realized_accuracy_low, summary.realized_accuracy_high = realized.low, realized.high
    summary.accuracy_risk, summary.risk_reason = accuracy_risk(summary, policy.accuracy_drop)
    if len(whole_labeled):
        summary.macro_f1 = macro_f1(whole_labeled["true_label"].to_numpy(),
                                    whole_labeled["predicted_label"].to_numpy())
    if len(labeled):
        snapshots["classification on labeled rows"] = _evidently_classification(
            ref, labeled, window_end)

    summary.verdict, reasons = _verdict(summary, policy, features, feature_level)
    summary.reasons.extend(reasons)
    summary.reasons.extend(untested + notes)  # said, but not reasons for the verdict
    snapshot_json = json.dumps({name: s.dict() for name, s in snapshots.items()}, default=str)
    return MonitoringReport(summary, snapshot_json, render_html(summary, snapshots), snapshots)
