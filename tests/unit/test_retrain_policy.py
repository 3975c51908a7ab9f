"""The retrain policy: K windows of drift, enough labels, cooldown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from monitor.retrain_policy import RetrainPolicy, decide_retrain

NOW = datetime(2026, 11, 3, 12, tzinfo=UTC)
POLICY = RetrainPolicy(windows=2, min_labeled=50, cooldown=timedelta(hours=6))


def report(i: int, verdict: str = "no_drift", p: float = 0.5, realized: float | None = None,
           estimated: float | None = 0.95) -> dict:
    return {"id": f"r{i}", "verdict": verdict, "embedding_p_value": p,
            "realized_accuracy": realized, "estimated_accuracy": estimated}


def decide(reports, labeled: int = 100, last: datetime | None = None):
    return decide_retrain(reports, reference_accuracy=0.95, labeled_available=labeled,
                          last_retrain_at=last, now=NOW, policy=POLICY)


def test_drift_must_hold_for_consecutive_windows() -> None:
    assert not decide([report(1), report(2, "drift")]).triggered
    assert not decide([report(1, "drift")]).triggered
    held = decide([report(1), report(2, "drift"), report(3, "drift")])
    assert held.triggered and held.report_ids == ["r2", "r3"]
    assert "drift verdict" in " ".join(held.reasons)
    # an embedding p-value without the verdict is not a signal: the verdict weighs it
    assert not decide([report(1, p=0.001), report(2, p=0.001)]).triggered


def test_an_accuracy_drop_counts_as_drift_even_when_inputs_look_alike() -> None:
    concept = [report(1, realized=0.6), report(2, realized=0.55)]
    decision = decide(concept)
    assert decision.triggered and "realized accuracy 0.600" in decision.reasons[0]
    assert not decide([report(1, realized=0.93), report(2, realized=0.94)]).triggered


def test_labels_and_cooldown_hold_a_retrain_back_and_say_so() -> None:
    drifting = [report(1, "drift"), report(2, "drift")]
    few = decide(drifting, labeled=10)
    assert not few.triggered and "only 10 labeled" in few.reasons[-1]
    cooling = decide(drifting, last=NOW - timedelta(hours=1))
    assert not cooling.triggered and "cooldown" in cooling.reasons[-1]
    assert decide(drifting, last=NOW - timedelta(hours=7)).triggered


def test_labels_count_from_where_the_drift_run_began_and_the_run_is_named() -> None:
    from monitor.retrain_policy import drift_run

    reports = [report(1, "drift"), report(2), report(3, "drift"), report(4, "drift"),
               report(5, realized=0.5)]
    run = drift_run(reports, 0.95, POLICY)
    assert [r["id"] for r, _ in run] == ["r3", "r4", "r5"]
    decision = decide(reports)
    assert decision.triggered and decision.report_ids == ["r3", "r4", "r5"]
    assert decision.reasons[0] == "drift held 3 windows"
    assert drift_run([*reports, report(6)], 0.95, POLICY) == []
