"""Alerts: recorded once in the store, posted to webhooks on 127.0.0.1 with retries."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from monitor.alerts import Alerter, Sender, check_monitor
from monitor.closed_loop import alert_on_report
from monitor.job import run_report_job
from monitor.settings import AlertSettings, MonitorSettings, Settings
from monitor.store.alerts import AlertRepository
from monitor.store.reports import ReportRepository
from tests.factories import production_records, reference_profile

HOUR = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
WINDOWS = MonitorSettings(interval_s=3600, lateness_s=0, window_minutes=60)


class Receiver:
    """A webhook on 127.0.0.1 that answers 500 to its first ``failures`` posts."""

    def __init__(self, failures: int = 0) -> None:
        self.failures, self.posts, self.lock = failures, [], threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    failing = receiver.failures > 0
                    receiver.failures -= failing
                    receiver.posts.append((self.headers["X-Vidmon-Alert-Id"], body,
                                           not failing))
                self.send_response(500 if failing else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def taken(self) -> list[tuple[str, dict]]:
        """Posts answered 200, as (alert id, body)."""
        with self.lock:
            return [(key, body) for key, body, ok in self.posts if ok]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    hook = Receiver()
    yield hook
    hook.close()


def _settings(*urls: str, **alerts: object) -> Settings:
    return Settings(alerts=AlertSettings(webhook_urls=list(urls), backoff_s=0.01,
                                         poll_interval_s=0.01, timeout_s=5, **alerts),
                    mlflow_ui_url="http://mlflow.example:5000")


def _drain(sender: Sender, passes: int = 200) -> None:
    """Send until nothing is left due (backoffs here are milliseconds)."""
    import time

    for _ in range(passes):
        if not sender.send_due():
            time.sleep(0.02)
        if not sender.repository.list(limit=500) or all(
                d["status"] in ("sent", "failed") for a in sender.repository.list(limit=500)
                for d in a["deliveries"]):
            return


def _loop_through(repository, hours: list[float]):
    """Reports on consecutive windows, bright (drifted) where ``hours`` says 1.0."""
    reports = ReportRepository(repository.engine)
    ids = []
    for i, bright in enumerate(hours):
        end = HOUR + timedelta(hours=i)
        repository.add_predictions(production_records(
            150, end - timedelta(minutes=50), seed=i, brightness=150.0 if bright else 100.0,
            spacing_s=10))
        outcome = run_report_job(WINDOWS, repository, reports, lambda *_: reference_profile(),
                                 now=end)
        ids.append(outcome.report_id)
    return reports, ids


def test_drift_alerts_on_the_first_window_of_each_run_only(repository, receiver) -> None:
    reports, ids = _loop_through(repository, [0, 1, 1, 0, 1])
    alerts = AlertRepository(repository.engine)
    alerter = Alerter(_settings(receiver.url), alerts, clock=lambda: HOUR + timedelta(hours=5))
    raised = [alert_on_report(alerter, reports, report_id) for report_id in ids]
    assert [reports.get(i)["verdict"] for i in ids] == [
        "no_drift", "drift", "drift", "no_drift", "drift"]
    assert raised == [False, True, False, False, True]
    # asked again (a monitor restarted mid-window), nothing new is recorded
    assert not any(alert_on_report(alerter, reports, report_id) for report_id in ids)
    assert receiver.posts == []  # recording posts nothing: the monitor never waits on a hook

    _drain(Sender(alerter.settings, alerts))
    taken = receiver.taken()
    assert sorted(key for key, _ in taken) == sorted(f"drift:{ids[i]}" for i in (1, 4))
    body = dict(taken)[f"drift:{ids[1]}"]
    assert body["event"] == "drift" and body["model"] == "m" and body["version"] == "1"
    assert body["severity"] == "info"  # inputs moved; whether accuracy did is its own alert
    assert body["text"].startswith("vidmon: input drift on m v1") and "brightness" in body["text"]
    assert body["accuracy_risk"] == reports.get(ids[1])["summary"]["accuracy_risk"]
    assert body["report_url"].endswith(f"/v1/reports/{ids[1]}/html")
    assert body["window"].endswith(reports.get(ids[1])["window_end"].isoformat())
    assert any("brightness" in r for r in body["reasons"])


def test_a_failing_webhook_is_retried_with_backoff_and_sent_once(repository) -> None:
    flaky, down = Receiver(failures=2), Receiver(failures=10**6)
    try:
        alerts = AlertRepository(repository.engine)
        settings = _settings(flaky.url, down.url, max_attempts=4)
        alerter = Alerter(settings, alerts, clock=lambda: HOUR)
        decision = {"id": "d1", "model_name": "m", "model_version": "3", "status": "promoted",
                    "challenger_version": "4", "mlflow_run_id": "r1",
                    "gate": {"reason": "recent accuracy +0.250"}}
        assert alerter.retrain_finished(decision)
        assert not alerter.retrain_finished(decision)  # the same event: not again
        _drain(Sender(settings, alerts))
        assert [key for key, _ in flaky.taken()] == ["promoted:d1"]
        assert len(flaky.posts) == 3  # two 500s, then taken
        body = flaky.taken()[0][1]
        assert body["mlflow_run_url"] == "http://mlflow.example:5000/#/runs/r1"
        assert "v4 of m promoted" in body["text"] and "<http://mlflow" in body["text"]
        assert len(down.posts) == 4  # max_attempts, then given up
        (alert,) = alerts.list()
        status = {d["url"]: (d["status"], d["attempts"]) for d in alert["deliveries"]}
        assert status == {flaky.url: ("sent", 3), down.url: ("failed", 4)}
        assert "HTTP 500" in next(d["last_error"] for d in alert["deliveries"]
                                  if d["url"] == down.url)
    finally:
        flaky.close()
        down.close()


def test_two_senders_on_one_store_post_each_alert_once(repository, receiver) -> None:
    alerts = AlertRepository(repository.engine)
    settings = _settings(receiver.url)
    alerter = Alerter(settings, alerts, clock=lambda: HOUR)
    for k in range(30):
        alerter.rollback("m", str(k + 1), str(k))
    senders = [Sender(settings, AlertRepository(repository.engine)) for _ in range(2)]
    for sender in senders:
        sender.start()
    try:
        from tests.waiting import wait_until

        wait_until(lambda: len(receiver.taken()) >= 30, timeout_s=30)
    finally:
        for sender in senders:
            sender.stop()
    counts = Counter(key for key, _ in receiver.taken())
    assert len(counts) == 30 and set(counts.values()) == {1}


def test_a_monitor_that_stopped_reporting_is_alerted_once(repository, receiver) -> None:
    reports, ids = _loop_through(repository, [0])
    # predictions keep coming after the last report...
    repository.add_predictions(production_records(20, HOUR + timedelta(minutes=5), seed=9))
    alerts = AlertRepository(repository.engine)
    settings = _settings(receiver.url)
    at = {"now": HOUR + timedelta(minutes=30)}
    alerter = Alerter(settings, alerts, clock=lambda: at["now"])
    assert not check_monitor(alerter, repository, reports, stale_after_s=7200)
    at["now"] = HOUR + timedelta(hours=3)  # ...and no report for three hours
    assert check_monitor(alerter, repository, reports, stale_after_s=7200)
    assert not check_monitor(alerter, repository, reports, stale_after_s=7200)  # once
    (alert,) = alerts.list()
    assert alert["kind"] == "monitor_stale" and alert["payload"]["last_report_id"] == ids[0]
    assert "is `vidmon monitor` running?" in alert["payload"]["text"]


def test_webhook_settings_take_a_list_or_commas_and_refuse_other_schemes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDMON_ALERTS__WEBHOOK_URLS",
                       "http://127.0.0.1:9/a, https://hooks.example/b")
    assert Settings().alerts.webhook_urls == ["http://127.0.0.1:9/a", "https://hooks.example/b"]
    with pytest.raises(ValueError, match="http"):
        AlertSettings(webhook_urls=["file:///etc/passwd"])


def test_a_retrain_outcome_alerts_by_how_it_ended(repository) -> None:
    alerts = AlertRepository(repository.engine)
    settings = _settings()  # no webhooks: recorded, not posted
    alerter = Alerter(settings, alerts, clock=lambda: HOUR)
    decision = {"id": "d2", "model_name": "m", "model_version": "1", "status": "running",
                "attempts": 1, "error": None, "mlflow_run_id": None}
    assert not alerter.retrain_outcome(decision)  # still running: nothing to say
    assert alerter.retrain_outcome({**decision, "status": "failed", "error": "boom"})
    last = {**decision, "status": "failed", "error": "boom again",
            "attempts": settings.retrain.max_attempts}
    assert alerter.retrain_outcome(last)
    assert sorted(a["id"] for a in alerts.list()) == [
        f"retrain_abandoned:d2:{settings.retrain.max_attempts}", "retrain_failed:d2:1"]
    assert all(a["deliveries"] == [] for a in alerts.list())


def test_accuracy_at_risk_and_labels_needed_are_loud_once_a_run(repository, receiver) -> None:
    alerts = AlertRepository(repository.engine)
    alerter = Alerter(_settings(receiver.url), alerts, clock=lambda: HOUR)

    def report(i: int, risk: str) -> dict:
        return {"id": f"r{i}", "model_name": "m", "model_version": "1", "verdict": "drift",
                "window_start": HOUR + timedelta(hours=i - 1),
                "window_end": HOUR + timedelta(hours=i),
                "summary": {"accuracy_risk": risk, "risk_reason": "labels put accuracy at "
                            "most 0.710, below the reference 0.950 - 0.05",
                            "estimate_reason": "the window lies outside the reference",
                            "labels_needed": 240}}

    assert alerter.accuracy(report(1, "cannot_estimate"), "ok")
    assert not alerter.accuracy(report(2, "cannot_estimate"), "cannot_estimate")
    assert alerter.accuracy(report(3, "at_risk"), "cannot_estimate")
    assert not alerter.accuracy(report(4, "at_risk"), "at_risk")
    assert not alerter.accuracy(report(5, "ok"), "at_risk")
    _drain(Sender(alerter.settings, alerts))
    taken = dict(receiver.taken())
    assert sorted(taken) == ["accuracy_at_risk:r3", "labels_needed:r1"]
    asked = taken["labels_needed:r1"]
    assert asked["severity"] == "warning" and asked["labels_needed"] == 240
    assert asked["labeling_queue_url"].endswith("/v1/labeling/queue?limit=240")
    assert "label 240 of its predictions" in asked["text"]
    risk = taken["accuracy_at_risk:r3"]
    assert risk["severity"] == "critical" and "below the reference" in risk["text"]
