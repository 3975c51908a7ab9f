"""When to retrain: a pure decision over the latest reports' accuracy, available labels and
history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from monitor.estimation.labeled import wilson_interval


@dataclass(frozen=True)
class RetrainPolicy:
    """Trigger when accuracy is at risk for ``windows`` consecutive reports, at least
    ``min_labeled`` labeled production clips exist, and ``cooldown`` has passed. Input
    drift on its own never triggers: inputs that moved without costing accuracy (a hue
    rotation costing under a point was flagged through noise and contrast) are news,
    not a reason to retrain."""

    windows: int = 2
    min_labeled: int = 50
    cooldown: timedelta = timedelta(hours=6)
    accuracy_drop: float = 0.05


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to retrain now, and why (stored whatever the answer)."""

    triggered: bool
    reasons: list[str] = field(default_factory=list)
    report_ids: list[str] = field(default_factory=list)


def risk_signals(report: dict[str, Any], reference_accuracy: float | None,
                 policy: RetrainPolicy) -> list[str]:
    """The accuracy-at-risk signals one report raises (empty: accuracy is not shown to have
    fallen): the upper end of the realized or estimated accuracy's interval below the
    reference accuracy minus ``accuracy_drop``. An estimate that only might be low (a few
    labels, an estimator unsure of this shift) does not count, nor does a window whose
    accuracy cannot be estimated (no number: it asks for labels instead)."""
    signals: list[str] = []
    if reference_accuracy is None:
        return signals
    for key in ("realized_accuracy", "estimated_accuracy"):
        high = report.get(f"{key}_high")
        value = report.get(key) if high is None else high
        if value is not None and value < reference_accuracy - policy.accuracy_drop:
            what = "upper bound of " if high is not None else ""
            method = report.get("realized_method" if key.startswith("realized")
                                else "estimate_method")
            signals.append(f"{what}{key.split('_')[0]} accuracy {value:.3f}"
                           f"{f' ({method})' if method else ''} < reference "
                           f"{reference_accuracy:.3f} - {policy.accuracy_drop}")
    return signals


def _labels(report: dict[str, Any]) -> tuple[float, int]:
    """(right, labeled) of a report's realized accuracy; (0, 0) without labels."""
    value, labeled = report.get("realized_accuracy"), report.get("labeled_rows") or 0
    return (0.0, 0) if value is None or not labeled else (value * labeled, int(labeled))


def _below_bar(report: dict[str, Any], reference_accuracy: float,
               policy: RetrainPolicy) -> bool:
    """Whether the window's labels put its accuracy below the bar, surely or not."""
    value = report.get("realized_accuracy")
    return value is not None and value < reference_accuracy - policy.accuracy_drop


def pooled_signal(reports: Sequence[dict[str, Any]], reference_accuracy: float,
                  policy: RetrainPolicy) -> str | None:
    """The at-risk signal of the labels of several consecutive windows together, or None.
    A window's hundred-odd labels bound its accuracy within about 6 points, so a drop of
    10 (a blur costing 0.99 -> 0.89) shows in one window only now and then; over two
    windows it shows. Pooled as a uniform sample (Wilson interval)."""
    right = sum(_labels(r)[0] for r in reports)
    labeled = sum(_labels(r)[1] for r in reports)
    if not labeled:
        return None
    high = wilson_interval(right, labeled)[1]
    if high >= reference_accuracy - policy.accuracy_drop:
        return None
    return (f"upper bound of realized accuracy over {len(reports)} windows {high:.3f} "
            f"({labeled} labels) < reference {reference_accuracy:.3f} - "
            f"{policy.accuracy_drop}")


def risk_run(reports: Sequence[dict[str, Any]], reference_accuracy: float | None,
             policy: RetrainPolicy) -> list[tuple[dict[str, Any], list[str]]]:
    """The newest unbroken run of reports (oldest first) whose accuracy is at risk, each
    with its signals; empty when there is none ending with the newest report. The run is
    the newest windows that raise a signal of their own or whose labels put accuracy below
    the bar (not surely: a window's interval is wide); it counts when every window raised
    its own signal or their labels pooled show accuracy at risk. The run's first window is
    where the data that cost accuracy begins: labels are counted, and retraining data
    taken, from there."""
    streak: list[tuple[dict[str, Any], list[str]]] = []
    for report in reversed(list(reports)):
        signals = risk_signals(report, reference_accuracy, policy)
        if not signals and (reference_accuracy is None or
                            not _below_bar(report, reference_accuracy, policy)):
            break
        streak.append((report, signals))
    streak.reverse()
    if all(signals for _, signals in streak):
        return streak
    pooled = pooled_signal([r for r, _ in streak], reference_accuracy, policy) \
        if reference_accuracy is not None else None
    return [(r, [*signals, pooled]) for r, signals in streak] if pooled else []


def decide_retrain(
    reports: Sequence[dict[str, Any]],
    *,
    reference_accuracy: float | None,
    labeled_available: int,
    last_retrain_at: datetime | None,
    now: datetime,
    policy: RetrainPolicy,
) -> RetrainDecision:
    """Decide on the newest reports (oldest first) of the serving model version.

    ``labeled_available`` counts labeled production clips since the run of at-risk windows
    began (see :func:`risk_run`): a retrain learns the data that cost accuracy, so labels
    from before it don't count. A triggered decision names every report of the run.
    """
    run = risk_run(reports, reference_accuracy, policy)
    if len(run) < policy.windows:
        recent = list(reports)[-policy.windows:]
        return RetrainDecision(
            False, [f"accuracy at risk in {len(run)} of {policy.windows} windows needed"],
            [r["id"] for r in recent])
    report_ids = [r["id"] for r, _ in run]
    reasons = [f"window {r['id']}: {', '.join(s)}" for r, s in run[-policy.windows:]]
    if len(run) > policy.windows:
        reasons.insert(0, f"accuracy at risk for {len(run)} windows")
    if labeled_available < policy.min_labeled:
        return RetrainDecision(False, reasons + [
            f"only {labeled_available} labeled production clips since accuracy fell, "
            f"{policy.min_labeled} needed"], report_ids)
    if last_retrain_at is not None and now - last_retrain_at < policy.cooldown:
        return RetrainDecision(False, reasons + [
            f"cooldown: last retrain at {last_retrain_at.isoformat()}, next after "
            f"{(last_retrain_at + policy.cooldown).isoformat()}"], report_ids)
    return RetrainDecision(True, reasons, report_ids)
