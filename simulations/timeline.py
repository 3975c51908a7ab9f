"""The demo's timeline as data: one row per simulated hour (= one report window), and the
checks that say whether the loop did what it should. Pure functions; nothing here talks to
the service or the store."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from monitor.estimation.labeled import wilson_interval

RECOVERY_POINTS = 0.03  # promoted model on drifted traffic vs before the drift
# One-sided 95 %: recovery fails only when the accuracy after is shown, at this confidence,
# to be more than RECOVERY_POINTS below the accuracy before.
_Z_ONE_SIDED = 1.645


@dataclass
class WindowRow:
    """One simulated hour: the traffic sent, the report on it, and what the loop did."""

    hour: int
    phase: str
    kind: str  # clean | covariate | concept
    served_by: str  # model version(s) that answered this hour
    requests: int
    failures: int
    correct: int  # answers that matched the true event (the simulator knows it)
    labels_sent: int
    report_id: str | None = None
    verdict: str | None = None
    drift_share: float | None = None
    embedding_p: float | None = None
    estimated_accuracy: float | None = None
    realized_accuracy: float | None = None
    labeled_rows: int = 0
    # Every label-free estimator's estimate, and the headline interval
    estimates: dict[str, float] = field(default_factory=dict)
    estimated_interval: tuple[float, float] | None = None
    decision: str = ""
    decision_triggered: bool = False
    decision_reasons: list[str] = field(default_factory=list)
    event: str = ""

    @property
    def accuracy(self) -> float | None:
        """Share of answered requests that were right."""
        answered = self.requests - self.failures
        return self.correct / answered if answered else None


@dataclass(frozen=True)
class Check:
    """One thing the demo must show, whether it did, and the numbers behind it."""

    name: str
    passed: bool
    detail: str


def pooled_accuracy(rows: Sequence[WindowRow]) -> float | None:
    """Accuracy over all answered requests of ``rows``."""
    answered = sum(r.requests - r.failures for r in rows)
    return sum(r.correct for r in rows) / answered if answered else None


def _phases(rows: Sequence[WindowRow]) -> list[list[WindowRow]]:
    """Consecutive rows grouped by phase, in order."""
    groups: list[list[WindowRow]] = []
    for row in rows:
        if not groups or groups[-1][0].phase != row.phase:
            groups.append([])
        groups[-1].append(row)
    return groups


def _promotion_index(phase: list[WindowRow]) -> int | None:
    """Index of the first row served after a promotion in this phase."""
    for i, row in enumerate(phase):
        if "promoted" in row.event:
            return i + 1
    return None


def check_clean(rows: Sequence[WindowRow]) -> Check:
    """No drift flagged in clean windows."""
    clean = [r for r in rows if r.kind == "clean" and r.verdict is not None]
    flagged = [r.hour for r in clean if r.verdict == "drift"]
    return Check("no drift flagged in clean windows", bool(clean) and not flagged,
                 f"{len(flagged)} of {len(clean)} clean windows flagged"
                 + (f" (hours {flagged})" if flagged else ""))


def check_covariate(phase: list[WindowRow]) -> Check:
    """Covariate drift is flagged within 2 windows of its onset."""
    name = phase[0].phase
    flagged = next((i for i, r in enumerate(phase) if r.verdict == "drift"), None)
    if flagged is None:
        return Check(f"{name} (covariate) flagged within 2 windows", False,
                     f"never flagged in {len(phase)} windows")
    return Check(f"{name} (covariate) flagged within 2 windows", flagged <= 1,
                 f"flagged in window {flagged + 1} after the onset (hour {phase[flagged].hour})")


def check_concept(phase: list[WindowRow]) -> Check:
    """Concept drift is caught through realized accuracy while the inputs look alike."""
    name = phase[0].phase
    trigger = next((r for r in phase if r.decision_triggered), None)
    end = _promotion_index(phase) or len(phase)
    before = [r for r in phase[:end] if r.verdict is not None]
    looked_drifted = [r.hour for r in before if r.verdict == "drift"]
    if trigger is None:
        return Check(f"{name} (concept) caught through realized accuracy", False,
                     "no retrain was triggered")
    windows = [reason for reason in trigger.decision_reasons if reason.startswith("window ")]
    by_accuracy = bool(windows) and all("realized accuracy" in w for w in windows)
    # One flagged window in the phase is what alpha allows by chance; more means the
    # inputs did not look alike.
    alike = len(looked_drifted) <= 1
    realized = [f"{r.realized_accuracy:.2f}" for r in before if r.realized_accuracy is not None]
    return Check(
        f"{name} (concept) caught through realized accuracy", by_accuracy and alike,
        f"retrain triggered at hour {trigger.hour} on realized accuracy "
        f"[{', '.join(realized)}]; {len(looked_drifted)} of {len(before)} windows showed "
        f"input drift")


def _answered_and_correct(rows: Sequence[WindowRow]) -> tuple[int, int]:
    return sum(r.requests - r.failures for r in rows), sum(r.correct for r in rows)


def accuracy_gap_bound(after: Sequence[WindowRow], before: Sequence[WindowRow]) -> float:
    """One-sided 95 % upper bound of accuracy(after) - accuracy(before), by Newcombe's
    hybrid score interval (Wilson intervals of each side; 1998, method 10): the most the
    accuracy after can have fallen short by, given how many requests each side saw."""
    (n_after, right_after), (n_before, right_before) = (
        _answered_and_correct(after), _answered_and_correct(before))
    p_after, p_before = right_after / n_after, right_before / n_before
    high_after = wilson_interval(right_after, n_after, _Z_ONE_SIDED)[1]
    low_before = wilson_interval(right_before, n_before, _Z_ONE_SIDED)[0]
    return p_after - p_before + math.hypot(high_after - p_after, p_before - low_before)


def check_recovery(phase: list[WindowRow], before: Sequence[WindowRow]) -> Check:
    """After promotion, accuracy on the drifted traffic is back within 3 points of the
    accuracy before the drift: it fails when the accuracy after is shown (one-sided 95 %)
    to be more than 3 points lower. A point estimate against a fixed margin would fail
    now and then on sampling noise alone: two windows of 160 requests at 0.96 differ by
    1.5 points (one standard error) by chance."""
    name = phase[0].phase
    start = _promotion_index(phase)
    baseline = pooled_accuracy(before)
    if start is None or start >= len(phase):
        return Check(f"{name}: accuracy recovered after promotion", False,
                     "no challenger was promoted" if start is None
                     else "no traffic after the promotion")
    after = pooled_accuracy(phase[start:])
    if baseline is None or after is None:
        return Check(f"{name}: accuracy recovered after promotion", False, "no answers")
    bound = accuracy_gap_bound(phase[start:], before)
    return Check(
        f"{name}: accuracy recovered after promotion", bound >= -RECOVERY_POINTS,
        f"{after:.3f} on drifted traffic after the promotion (hours {phase[start].hour}-"
        f"{phase[-1].hour}) vs {baseline:.3f} before the drift (hours {before[0].hour}-"
        f"{before[-1].hour}), difference at most {bound * 100:+.1f} points (95 %); "
        f"{RECOVERY_POINTS * 100:.0f} points allowed")


def check_timeline(rows: Sequence[WindowRow]) -> list[Check]:
    """Every check the demo must pass, in timeline order."""
    checks = [check_clean(rows)]
    phases = _phases(rows)
    for previous, phase in zip(phases, phases[1:]):
        if phase[0].kind == "clean":
            continue
        checks.append(check_concept(phase) if phase[0].kind == "concept"
                      else check_covariate(phase))
        # The baseline is the tail of the phase before, served by the model that was
        # right before this drift began.
        start = _promotion_index(previous) or 0
        checks.append(check_recovery(phase, previous[start:]))
    return checks
