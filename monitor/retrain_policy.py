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
    alpha: float = 0.05


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to retrain now, and why (stored whatever the answer)."""

    triggered: bool
    reasons: list[str] = field(default_factory=list)
    report_ids: list[str] = field(default_factory=list)


def drift_signals(report: dict[str, Any], reference_accuracy: float | None,
                  policy: RetrainPolicy) -> list[str]:
    """The drift signals one report raises (empty: the window looks fine)."""
    signals = []
    if report.get("verdict") == "drift":
        signals.append("drift verdict")
    p_value = report.get("embedding_p_value")
    if p_value is not None and p_value < policy.alpha:
        signals.append(f"embedding p={p_value:.3g}")
    if reference_accuracy is not None:
        for key in ("realized_accuracy", "estimated_accuracy"):
            value = report.get(key)
            if value is not None and value < reference_accuracy - policy.accuracy_drop:
                signals.append(f"{key.split('_')[0]} accuracy {value:.3f} < reference "
                               f"{reference_accuracy:.3f} - {policy.accuracy_drop}")
    return signals


def decide_retrain(
    reports: Sequence[dict[str, Any]],
    *,
    reference_accuracy: float | None,
    labeled_available: int,
    last_retrain_at: datetime | None,
    now: datetime,
    policy: RetrainPolicy,
) -> RetrainDecision:
    """Decide on the newest reports (oldest first) of the serving model version."""
    recent = list(reports)[-policy.windows:]
    report_ids = [r["id"] for r in recent]
    signals = [drift_signals(r, reference_accuracy, policy) for r in recent]
    if len(recent) < policy.windows or not all(signals):
        held = sum(1 for s in reversed(signals) if s) if signals else 0
        return RetrainDecision(False, [f"drift held {held} of {policy.windows} windows needed"],
                               report_ids)
    reasons = [f"window {r['id']}: {', '.join(s)}" for r, s in zip(recent, signals)]
    if labeled_available < policy.min_labeled:
        return RetrainDecision(False, reasons + [
            f"only {labeled_available} labeled production clips, {policy.min_labeled} needed"],
            report_ids)
    if last_retrain_at is not None and now - last_retrain_at < policy.cooldown:
        return RetrainDecision(False, reasons + [
            f"cooldown: last retrain at {last_retrain_at.isoformat()}, next after "
            f"{(last_retrain_at + policy.cooldown).isoformat()}"], report_ids)
    return RetrainDecision(True, reasons, report_ids)
