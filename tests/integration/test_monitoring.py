"""The report job and the scheduler on real databases."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import OperationalError

from monitor.job import run_report_job, window_end_for
from monitor.scheduler import LEASE, Monitor
from monitor.settings import MonitorSettings
from monitor.store.reports import ReportRepository
from tests.factories import LABELS, production_records, reference_profile
from tests.waiting import wait_until

HOUR = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
SETTINGS = MonitorSettings(interval_s=3600, lateness_s=0, window_minutes=60)


@pytest.fixture
def reports(repository) -> ReportRepository:
    return ReportRepository(repository.engine)


def _profile_loader(calls: list | None = None):
    profile = reference_profile()

    def load(name: str, version: str):
        if calls is not None:
            calls.append((name, version))
        return profile

    return load


def test_windows_ends_are_interval_boundaries() -> None:
    assert window_end_for(HOUR + timedelta(minutes=59), 3600) == HOUR
    assert window_end_for(HOUR, 300) == HOUR


def test_clean_window_no_drift_bright_window_drift_and_no_rerun(repository, reports) -> None:
    repository.add_predictions(production_records(200, HOUR - timedelta(minutes=50), seed=1))
    clean = run_report_job(SETTINGS, repository, reports, _profile_loader(), now=HOUR)
    assert clean.status == "reported" and clean.verdict == "no_drift"
    assert run_report_job(SETTINGS, repository, reports, _profile_loader(),
                          now=HOUR + timedelta(minutes=5)).status == "already_reported"
    assert repository.count(source="reference") == 300  # stored once, with the first report

    repository.add_predictions(production_records(200, HOUR + timedelta(minutes=5), seed=2,
                                                  brightness=130.0))
    bright = run_report_job(SETTINGS, repository, reports, _profile_loader(),
                            now=HOUR + timedelta(hours=1))
    assert bright.verdict == "drift"
    summary = reports.get(bright.report_id)["summary"]
    assert summary["column_drift"]["brightness"]["drifted"]
    assert summary["rows"] == 200 and summary["labeled_rows"] == 0
    listed, total = reports.list(model_name="m")
    assert total == 2 and [r["verdict"] for r in listed] == ["drift", "no_drift"]
    assert "vidmon monitoring report" in reports.html(bright.report_id)


def test_labels_arriving_later_change_the_performance_section(repository, reports) -> None:
    records = production_records(120, HOUR - timedelta(minutes=50), seed=3)
    repository.add_predictions(records)
    before = run_report_job(SETTINGS, repository, reports, _profile_loader(), now=HOUR)
    first = reports.get(before.report_id)
    assert first["realized_accuracy"] is None and first["estimated_accuracy"] is not None

    # Labels for the window come in (two thirds right); the next hour's window covers it.
    repository.apply_feedback({r.id: (r.predicted_label if i % 3 else LABELS[
        (LABELS.index(r.predicted_label) + 1) % 3]) for i, r in enumerate(records)})
    later = MonitorSettings(interval_s=3600, lateness_s=0, window_minutes=120)
    after = run_report_job(later, repository, reports, _profile_loader(),
                           now=HOUR + timedelta(hours=1))
    second = reports.get(after.report_id)
    assert second["labeled_rows"] == 120
    assert second["realized_accuracy"] == pytest.approx(80 / 120)
    assert second["macro_f1"] is not None


def test_each_report_is_also_added_to_the_evidently_workspace(
    repository, reports, tmp_path
) -> None:
    from evidently.ui.workspace import Workspace

    from monitor.objects.workspace import EvidentlyWorkspace

    repository.add_predictions(production_records(100, HOUR - timedelta(minutes=30), seed=7))
    workspace = EvidentlyWorkspace(tmp_path / "ws")
    outcome = run_report_job(SETTINGS, repository, reports, _profile_loader(), now=HOUR,
                             workspace=workspace)
    assert outcome.status == "reported"
    browsed = Workspace.create(str(tmp_path / "ws"))
    project = browsed.search_project("vidmon")[0]
    # the column runs, per clip and per video (no labels yet, so no classification run)
    assert len(browsed.list_runs(project.id)) == 2

    # Retention prunes the copies by the time in their ids (the machine's clock).
    stored = list((tmp_path / "ws").rglob("snapshots/*.json"))
    assert len(stored) == 2
    now = datetime.now(UTC)
    assert workspace.prune(now - timedelta(days=1)) == 0
    assert workspace.prune(now + timedelta(minutes=1), dry_run=True) == 2
    assert len(browsed.list_runs(project.id)) == 2 and stored[0].exists()
    assert workspace.prune(now + timedelta(minutes=1)) == 2
    assert Workspace.create(str(tmp_path / "ws")).list_runs(project.id) == []
    assert not stored[0].exists()


def test_no_traffic_means_no_report(repository, reports) -> None:
    outcome = run_report_job(SETTINGS, repository, reports, _profile_loader(), now=HOUR)
    assert outcome.status == "no_traffic" and reports.list()[1] == 0


def test_quiet_windows_after_traffic_are_not_reports(repository, reports) -> None:
    repository.add_predictions(production_records(60, HOUR - timedelta(minutes=50), seed=1))
    assert run_report_job(SETTINGS, repository, reports, _profile_loader(),
                          now=HOUR).status == "reported"
    for hours in (1, 2, 3):  # the camera went dark: three idle hours
        outcome = run_report_job(SETTINGS, repository, reports, _profile_loader(),
                                 now=HOUR + timedelta(hours=hours))
        assert outcome.status == "no_traffic" and outcome.model_version == "1"
    assert reports.list()[1] == 1


def test_one_scheduler_acts_and_a_restart_does_not_repeat_a_window(repository, reports) -> None:
    now = datetime.now(UTC)
    repository.add_predictions(production_records(60, now - timedelta(seconds=90), seed=4))
    from monitor.retention import GcResult

    settings = MonitorSettings(interval_s=1, lateness_s=0, window_minutes=5, lease_ttl_s=5.0)
    collected: dict[str, int] = {"first": 0, "second": 0}

    def collector(name: str):  # type: ignore[no-untyped-def]
        def collect() -> GcResult:
            collected[name] += 1
            return GcResult(dry_run=True)
        return collect

    first, second = (Monitor(settings, repository, ReportRepository(repository.engine),
                             _profile_loader(), collect_garbage=collector(name),
                             gc_interval_s=1) for name in ("first", "second"))
    threads = [threading.Thread(target=m.serve_forever, daemon=True) for m in (first, second)]
    threads[0].start()
    wait_until(lambda: first.is_leader)
    threads[1].start()
    wait_until(lambda: first.runs >= 2 and collected["first"] >= 1)
    assert not second.is_leader and second.runs == 0  # the standby never acts
    assert collected["second"] == 0  # nor collects garbage

    first.stop()
    threads[0].join(10)
    wait_until(lambda: second.is_leader, timeout_s=10)  # the lease passes to the standby
    wait_until(lambda: second.runs >= 1)
    second.stop()
    threads[1].join(10)
    # A stopped monitor leaves at once; a report it had begun ends on its own thread.
    wait_until(lambda: not first.busy and not second.busy)

    rows, total = reports.list(limit=1000)
    ends = [r["window_end"] for r in rows]
    assert total >= 2 and len(ends) == len(set(ends))  # no window reported twice


def test_a_leader_stopped_mid_report_gives_the_lease_up_at_once(repository, reports) -> None:
    now = datetime.now(UTC)
    repository.add_predictions(production_records(60, now - timedelta(seconds=90), seed=5))
    settings = MonitorSettings(interval_s=1, lateness_s=0, window_minutes=5, lease_ttl_s=30.0)
    started, finish = threading.Event(), threading.Event()
    profile = _profile_loader()

    def slow(name: str, version: str):  # type: ignore[no-untyped-def]
        started.set()
        finish.wait(30)  # a report that takes long: the monitor is asked to stop meanwhile
        return profile(name, version)

    leader = Monitor(settings, repository, reports, slow)
    thread = threading.Thread(target=leader.serve_forever, daemon=True)
    thread.start()
    assert started.wait(20) and leader.busy
    leader.stop()
    thread.join(5)
    assert not thread.is_alive()  # out of serve_forever while the report still runs
    # The lease is free at once (not after its 30 s): a standby takes it.
    assert reports.acquire_lease(LEASE, "standby", 30.0)
    finish.set()
    wait_until(lambda: not leader.busy)


class _Unreachable(ReportRepository):
    """The store as a monitor cut off from the network sees it, while ``cut`` is set."""

    def __init__(self, engine) -> None:  # type: ignore[no-untyped-def]
        super().__init__(engine)
        self.cut = threading.Event()

    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        if self.cut.is_set():
            raise OperationalError("UPDATE leases", {}, ConnectionRefusedError("cut off"))
        return super().acquire_lease(name, holder, ttl_s)


def test_a_leader_cut_off_from_the_store_stands_by_and_leads_again(repository) -> None:
    """Cut off, the leader cannot renew its lease: it stops acting (a standby may have taken
    over) and keeps running, instead of dying on the store's error; mended, it leads again."""
    reports = _Unreachable(repository.engine)
    settings = MonitorSettings(interval_s=3600, lateness_s=0, window_minutes=60,
                               lease_ttl_s=0.6)
    monitor = Monitor(settings, repository, reports, _profile_loader())
    thread = threading.Thread(target=monitor.serve_forever, daemon=True)
    thread.start()
    wait_until(lambda: monitor.is_leader, timeout_s=10)
    reports.cut.set()
    wait_until(lambda: not monitor.is_leader, timeout_s=5)
    assert thread.is_alive()
    reports.cut.clear()
    wait_until(lambda: monitor.is_leader, timeout_s=10)
    monitor.stop()
    thread.join(10)
    assert not thread.is_alive()


def test_a_report_with_undefined_statistics_is_stored_on_every_database(repository,
                                                                         reports) -> None:
    """A model that predicts one class everywhere leaves the chi-square of the predicted
    label undefined (NaN); PostgreSQL's JSON refuses NaN, so it is stored as null."""
    from dataclasses import replace

    import numpy as np

    from monitor.profile import ReferenceProfile
    from tests.factories import embeddings_for, feature_rows

    rng = np.random.default_rng(0)
    probabilities = np.tile([0.9, 0.05, 0.05], (300, 1))
    one_class = ReferenceProfile.build(
        label_names=LABELS, true_labels=rng.integers(0, 3, 300), probabilities=probabilities,
        embeddings=embeddings_for(np.array([LABELS[0]] * 300), rng),
        features=feature_rows(300, rng))
    repository.add_predictions([replace(r, predicted_label=LABELS[0]) for r in
                                production_records(100, HOUR - timedelta(minutes=50), seed=3)])
    outcome = run_report_job(SETTINGS, repository, reports, lambda *_: one_class, now=HOUR)
    assert outcome.status == "reported"
    stored = reports.get(outcome.report_id)["summary"]["column_drift"]["predicted_label"]
    # undefined is not "no drift": untested, and said
    assert stored["score"] is None and stored["drifted"] is None
    assert any(r.startswith("predicted_label not tested") for r in
               reports.get(outcome.report_id)["summary"]["reasons"])


def test_label_lags_measure_prediction_to_label(repository) -> None:
    records = production_records(30, HOUR - timedelta(minutes=50), seed=3)
    repository.add_predictions(records)
    repository.apply_feedback({r.id: "a" for r in records[:10]}, now=HOUR + timedelta(minutes=10))
    lags = repository.label_lags("m", since=HOUR - timedelta(hours=1))
    expected = [(HOUR + timedelta(minutes=10) - r.created_at).total_seconds() for r in records[:10]]
    assert sorted(lags) == sorted(expected)
    assert repository.label_lags("m", since=HOUR) == []  # made before ``since``


def test_the_report_job_tests_each_source_against_its_own_past(repository, reports) -> None:
    """Four cameras with their own brightness; the store gives each its last hours as its
    baseline (rows drawn at random, bounded), and the dark one that went bright is named."""
    from dataclasses import replace

    def camera(i: int, start: datetime, n: int, seed: int, brightness: float) -> list:
        return [replace(r, source_id=f"cam-{i}") for r in production_records(
            n, start, seed=seed, brightness=brightness, spacing_s=5)]

    levels = {0: 70.0, 1: 90.0, 2: 110.0, 3: 130.0}
    for i, level in levels.items():  # two hours of history, then the window
        repository.add_predictions(camera(i, HOUR - timedelta(hours=3), 300, 10 + i, level))
        moved = 100.0 if i == 0 else level  # cam-0's lights came on
        repository.add_predictions(camera(i, HOUR - timedelta(minutes=55), 80, 20 + i, moved))
    settings = SETTINGS.model_copy(update={"source_baseline_hours": 6,
                                           "source_baseline_rows": 100})
    outcome = run_report_job(settings, repository, reports, _profile_loader(), now=HOUR)
    summary = reports.get(outcome.report_id)["summary"]
    assert summary["drifted_sources"] == ["cam-0"]
    assert summary["source_drift"]["cam-0"]["drifted_columns"] == ["brightness"]
    assert {s: r["baseline_rows"] for s, r in summary["source_drift"].items()} == {
        f"cam-{i}": 100 for i in levels}
    assert all(summary["source_drift"][f"cam-{i}"]["status"] == "no_drift" for i in (1, 2, 3))
    assert outcome.verdict == "drift"
    # the drift alert names the camera; /metrics has a gauge per tested source
    from monitor.alerts import Alerter
    from monitor.settings import Settings
    from monitor.store.alerts import AlertRepository
    from serving.metrics import _report_gauges

    alerts = AlertRepository(repository.engine)
    assert Alerter(Settings(), alerts, clock=lambda: HOUR).drift(
        reports.get(outcome.report_id), None)
    payload = alerts.list(limit=5)[0]["payload"]
    assert payload["sources"] == ["cam-0"] and "cam-0: brightness" in payload["text"]
    latest = reports.latest_per_version(HOUR - timedelta(hours=2))
    gauge = next(g for g in _report_gauges(latest, HOUR)
                 if g.name == "vidmon_report_source_drift")
    assert {s.labels["source"]: s.value for s in gauge.samples} == {
        "cam-0": 1.0, "cam-1": 0.0, "cam-2": 0.0, "cam-3": 0.0}
