"""The retrain policy: K windows with accuracy at risk, enough labels, cooldown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from monitor.retrain_policy import RetrainPolicy, decide_retrain, risk_run

NOW = datetime(2026, 11, 3, 12, tzinfo=UTC)
POLICY = RetrainPolicy(windows=2, min_labeled=50, cooldown=timedelta(hours=6))


def report(i: int, verdict: str = "no_drift", p: float = 0.5, realized: float | None = None,
           estimated: float | None = 0.95, estimated_high: float | None = None) -> dict:
    return {"id": f"r{i}", "verdict": verdict, "embedding_p_value": p,
            "realized_accuracy": realized, "estimated_accuracy": estimated,
            "estimated_accuracy_high": estimated_high}


def decide(reports, labeled: int = 100, last: datetime | None = None):
    return decide_retrain(reports, reference_accuracy=0.95, labeled_available=labeled,
                          last_retrain_at=last, now=NOW, policy=POLICY)


def test_input_drift_alone_never_triggers_a_retrain() -> None:
    # A hue rotation: inputs drifted for hours, accuracy held.
    drifting = [report(i, "drift", p=0.001, estimated=0.94) for i in range(1, 5)]
    decision = decide(drifting)
    assert not decision.triggered
    assert decision.reasons == ["accuracy at risk in 0 of 2 windows needed"]


def test_accuracy_at_risk_must_hold_for_consecutive_windows() -> None:
    low = {"estimated": 0.80, "estimated_high": 0.85}
    assert not decide([report(1), report(2, **low)]).triggered
    held = decide([report(1), report(2, "drift", **low), report(3, **low)])
    assert held.triggered and held.report_ids == ["r2", "r3"]
    assert "upper bound of estimated accuracy 0.850" in " ".join(held.reasons)
    # an estimate that only might be low (its interval reaches the bar) is no signal
    unsure = {"estimated": 0.85, "estimated_high": 0.97}
    assert not decide([report(1, **unsure), report(2, **unsure)]).triggered
    # "cannot estimate" gives no number, so no signal: it asks for labels instead
    assert not decide([report(1, estimated=None), report(2, estimated=None)]).triggered


def test_an_accuracy_drop_counts_even_when_inputs_look_alike() -> None:
    concept = [report(1, realized=0.6), report(2, realized=0.55)]
    decision = decide(concept)
    assert decision.triggered and "realized accuracy 0.600" in decision.reasons[0]
    assert not decide([report(1, realized=0.93), report(2, realized=0.94)]).triggered


def test_labels_and_cooldown_hold_a_retrain_back_and_say_so() -> None:
    falling = [report(1, realized=0.7), report(2, realized=0.7)]
    few = decide(falling, labeled=10)
    assert not few.triggered and "only 10 labeled" in few.reasons[-1]
    cooling = decide(falling, last=NOW - timedelta(hours=1))
    assert not cooling.triggered and "cooldown" in cooling.reasons[-1]
    assert decide(falling, last=NOW - timedelta(hours=7)).triggered


def test_labels_count_from_where_the_risk_began_and_the_run_is_named() -> None:
    reports = [report(1, realized=0.5), report(2), report(3, realized=0.6),
               report(4, realized=0.6), report(5, realized=0.5)]
    run = risk_run(reports, 0.95, POLICY)
    assert [r["id"] for r, _ in run] == ["r3", "r4", "r5"]
    decision = decide(reports)
    assert decision.triggered and decision.report_ids == ["r3", "r4", "r5"]
    assert decision.reasons[0] == "accuracy at risk for 3 windows"
    assert risk_run([*reports, report(6)], 0.95, POLICY) == []


def test_labels_pooled_over_windows_show_a_drop_no_single_window_can() -> None:
    # A blur costing ten points: ~95 labels a window at 0.89 bound each window only to
    # [0.81, 0.94], not below the bar of 0.90; two windows' 190 labels reach 0.93.
    blur = [report(1, realized=0.99), {**report(2, realized=0.89), "labeled_rows": 95,
                                       "realized_accuracy_high": 0.94},
            {**report(3, realized=0.91), "labeled_rows": 98, "realized_accuracy_high": 0.96}]
    policy = RetrainPolicy(windows=2, min_labeled=50, accuracy_drop=0.05)
    run = risk_run(blur, 0.99, policy)
    assert [r["id"] for r, _ in run] == ["r2", "r3"]
    assert "over 2 windows" in run[-1][1][-1] and "(193 labels)" in run[-1][1][-1]
    decision = decide_retrain(blur, reference_accuracy=0.99, labeled_available=100,
                              last_retrain_at=None, now=NOW, policy=policy)
    assert decision.triggered
    # A hue shift costing under a point: its windows' labels do not even put it below the
    # bar, so nothing is pooled and nothing triggers, however many windows drift.
    hue = [{**report(i, "drift", realized=0.985), "labeled_rows": 95,
            "realized_accuracy_high": 1.0} for i in range(1, 6)]
    assert risk_run(hue, 0.99, policy) == []
    # Two windows below the bar whose pooled labels still reach it: not at risk.
    unsure = [{**report(i, realized=0.93), "labeled_rows": 30,
               "realized_accuracy_high": 0.99} for i in (1, 2)]
    assert risk_run(unsure, 0.99, policy) == []
