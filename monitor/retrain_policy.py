"""When to retrain: a pure decision over the latest reports, available labels and history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class RetrainPolicy:
    """Trigger when a drift signal holds for ``windows`` consecutive reports, at least
    ``min_labeled`` labeled production clips exist, and ``cooldown`` has passed."""

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


def drift_signals(report: dict[str, Any], reference_accuracy: float | None,
                  policy: RetrainPolicy) -> list[str]:
    """The drift signals one report raises (empty: the window looks fine). Embedding drift
    counts through the verdict, which asks for an effect as well as a p-value: a p-value of
    its own would call any offset drift once windows are large."""
    signals = []
    if report.get("verdict") == "drift":
        signals.append("drift verdict")
    if reference_accuracy is not None:
        for key in ("realized_accuracy", "estimated_accuracy"):
            # The interval's upper end must fall below the bar: an estimate that only might
            # be low (a few labels, an estimator unsure of this shift) does not trigger.
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


def drift_run(reports: Sequence[dict[str, Any]], reference_accuracy: float | None,
              policy: RetrainPolicy) -> list[tuple[dict[str, Any], list[str]]]:
    """The newest unbroken run of reports (oldest first) that raise a drift signal, each with
    its signals; empty when the newest report looks fine. Its first window is where the
    drifted data begins: labels are counted, and retraining data taken, from there."""
    run: list[tuple[dict[str, Any], list[str]]] = []
    for report in reversed(list(reports)):
        signals = drift_signals(report, reference_accuracy, policy)
        if not signals:
            break
        run.append((report, signals))
    return run[::-1]


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

    ``labeled_available`` counts labeled production clips since the drift run began (see
    :func:`drift_run`): a retrain learns the drifted data, so labels from before it don't
    count. A triggered decision names every report of the run.
    """
    run = drift_run(reports, reference_accuracy, policy)
    if len(run) < policy.windows:
        recent = list(reports)[-policy.windows:]
        return RetrainDecision(
            False, [f"drift held {len(run)} of {policy.windows} windows needed"],
            [r["id"] for r in recent])
    report_ids = [r["id"] for r, _ in run]
    reasons = [f"window {r['id']}: {', '.join(s)}" for r, s in run[-policy.windows:]]
    if len(run) > policy.windows:
        reasons.insert(0, f"drift held {len(run)} windows")
    if labeled_available < policy.min_labeled:
        return RetrainDecision(False, reasons + [
            f"only {labeled_available} labeled production clips since the drift began, "
            f"{policy.min_labeled} needed"], report_ids)
    if last_retrain_at is not None and now - last_retrain_at < policy.cooldown:
        return RetrainDecision(False, reasons + [
            f"cooldown: last retrain at {last_retrain_at.isoformat()}, next after "
            f"{(last_retrain_at + policy.cooldown).isoformat()}"], report_ids)
    return RetrainDecision(True, reasons, report_ids)
