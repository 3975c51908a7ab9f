"""The demo's checks on a timeline: each passes on a good run and fails on a bad one."""

from __future__ import annotations

from simulations.timeline import (
    RECOVERY_POINTS,
    WindowRow,
    accuracy_gap_bound,
    check_timeline,
    pooled_accuracy,
)


def row(hour: int, phase: str, kind: str, correct: int, verdict: str = "no_drift",
        event: str = "", triggered: bool = False, reasons: list[str] | None = None,
        realized: float | None = None) -> WindowRow:
    return WindowRow(hour=hour, phase=phase, kind=kind, served_by="v1", requests=100,
                     failures=0, correct=correct, labels_sent=50, report_id=f"r{hour}",
                     verdict=verdict, realized_accuracy=realized, decision_triggered=triggered,
                     decision_reasons=reasons or [], event=event)


def good_run() -> list[WindowRow]:
    rows = [row(h, "clean", "clean", 99) for h in range(3)]
    rows += [row(3, "blur", "covariate", 80, "drift"),
             row(4, "blur", "covariate", 82, "drift", "v2 promoted after 30s", True,
                 ["window r3: drift verdict", "window r4: drift verdict"]),
             row(5, "blur", "covariate", 98), row(6, "blur", "covariate", 97)]
    rows += [row(7, "mirror", "concept", 60, realized=0.6),
             row(8, "mirror", "concept", 61, "drift", "v3 promoted after 40s", True,
                 ["window r7: realized accuracy 0.600 < reference 0.970 - 0.05",
                  "window r8: drift verdict, realized accuracy 0.610 < reference 0.970 - 0.05"],
                 realized=0.61),
             row(9, "mirror", "concept", 96), row(10, "mirror", "concept", 97)]
    return rows


def test_a_good_run_passes_every_check() -> None:
    checks = check_timeline(good_run())
    assert [c.passed for c in checks] == [True] * 5, checks
    assert "0 of 3 clean windows flagged" in checks[0].detail
    assert "window 1 after the onset" in checks[1].detail
    assert "0.975 on drifted traffic" in checks[2].detail and "0.990 before" in checks[2].detail
    assert "1 of 2 windows showed input drift" in checks[3].detail
    assert "0.965" in checks[4].detail and "0.975 before" in checks[4].detail


def test_each_check_fails_when_the_loop_misbehaves() -> None:
    rows = good_run()
    rows[1].verdict = "drift"  # a false alarm on clean traffic
    rows[3].verdict = rows[4].verdict = "no_drift"  # blur seen only from its third window
    rows[5].verdict = "drift"
    rows[9].correct = 80  # the promoted mirror model falls 9 points short
    rows[7].verdict = "drift"  # and the mirror looked like input drift twice
    checks = check_timeline(rows)
    assert [c.passed for c in checks] == [False, False, True, False, False], checks
    assert "hours [1]" in checks[0].detail


def test_a_concept_retrain_triggered_on_input_drift_is_not_a_catch_by_accuracy() -> None:
    rows = good_run()
    rows[8].decision_reasons = ["window r7: drift verdict", "window r8: drift verdict"]
    assert not check_timeline(rows)[3].passed


def test_no_promotion_means_no_recovery() -> None:
    rows = good_run()[:7] + [row(8, "mirror", "concept", 60, event="v3 rejected: gain")]
    checks = check_timeline(rows)
    assert not checks[-1].passed and "no challenger was promoted" in checks[-1].detail
    assert pooled_accuracy([]) is None


def windows(correct: int, requests: int = 160, count: int = 2) -> list[WindowRow]:
    rows = [row(h, "blur", "covariate", 0) for h in range(count)]
    for r in rows:
        r.requests, r.correct = requests, correct
    return rows


def test_recovery_allows_sampling_noise_but_not_a_real_shortfall() -> None:
    before = windows(156)  # 0.975 of 320
    # 0.9375 of 320 after: 3.75 points short as measured, which two windows of 160
    # requests cannot tell from 3 (a demo run in CI failed a point check on exactly this)
    noisy = accuracy_gap_bound(windows(150), before)
    assert -0.0375 < noisy and noisy >= -RECOVERY_POINTS
    assert accuracy_gap_bound(windows(144), before) < -RECOVERY_POINTS  # 0.90: 7.5 short
    # the bound narrows with traffic: 0.93 of 320 passes, 0.93 of 3,200 is a real shortfall
    assert accuracy_gap_bound(windows(149), before) >= -RECOVERY_POINTS
    assert accuracy_gap_bound(windows(1488, 1600), windows(1560, 1600)) < -RECOVERY_POINTS
    assert 0 < accuracy_gap_bound(windows(160), windows(160)) < 0.02  # both perfect
