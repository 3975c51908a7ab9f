"""Notifications for the people on call: what happened, recorded once, posted to webhooks.

:class:`Alerter` turns the loop's events into alerts with a Slack-compatible ``text`` line
and structured fields (model, version, window, reasons, links to the report page and the
MLflow run), recorded in the store under a key made from what they are about, so an event
is never recorded, nor sent, twice. :class:`Sender` posts them from a thread of its own
with retries and doubling backoff: recording is one insert, so the monitor never waits on
a receiver. Each POST carries ``X-Vidmon-Alert-Id``, so a receiver can drop the rare repeat
when a sender died between a receiver's 2xx and recording it.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any

import httpx

from monitor.clock import Clock, system_clock
from monitor.settings import Settings
from monitor.store.alerts import AlertRepository, Delivery
from monitor.store.reports import ReportRepository
from monitor.store.repository import PredictionRepository

log = logging.getLogger(__name__)

DRIFT, MONITOR_STALE, ROLLBACK = "drift", "monitor_stale", "rollback"
ACCURACY_AT_RISK, LABELS_NEEDED = "accuracy_at_risk", "labels_needed"
RETRAIN_TRIGGERED, PROMOTED, REJECTED = "retrain_triggered", "promoted", "rejected"
RETRAIN_FAILED, RETRAIN_ABANDONED = "retrain_failed", "retrain_abandoned"
RETRAIN_CANCELLED = "retrain_cancelled"
STORE_RETRY_S = 30.0  # how long a sender waits after the store failed it
# Alerts still to act on: the dashboard's "open alerts" are these since the last promotion.
# Input drift alone is news, not an action: it is recorded and sent, but not counted here.
ACTION_NEEDED = (ACCURACY_AT_RISK, LABELS_NEEDED, MONITOR_STALE, RETRAIN_FAILED,
                 RETRAIN_ABANDONED, REJECTED)
# How loud each kind is, in every payload (a receiver can route on it).
SEVERITY = {ACCURACY_AT_RISK: "critical", MONITOR_STALE: "critical",
            RETRAIN_ABANDONED: "critical", LABELS_NEEDED: "warning", RETRAIN_FAILED: "warning",
            REJECTED: "warning", DRIFT: "info"}


class Alerter:
    """Records the loop's events as alerts (on ``clock``'s time line)."""

    def __init__(self, settings: Settings, repository: AlertRepository,
                 clock: Clock = system_clock) -> None:
        self.settings, self.repository, self.clock = settings, repository, clock

    def _record(self, key: str, kind: str, model: str, version: str | None, text: str,
                **fields: Any) -> bool:
        now = self.clock()
        payload = {"text": f"vidmon: {text}", "event": kind, "id": key, "model": model,
                   "version": version, "at": now.isoformat(),
                   "severity": SEVERITY.get(kind, "info"), **fields}
        added = self.repository.record(key, kind, model, version, payload,
                                       self.settings.alerts.webhook_urls, created_at=now,
                                       due_at=system_clock())
        if added:
            log.info("alert %s: %s", key, text)
        return added

    def _report_url(self, report_id: str) -> str:
        return f"{self.settings.public_url}/v1/reports/{report_id}/html"

    def _run_url(self, run_id: str | None) -> str | None:
        return f"{self.settings.mlflow_ui}/#/runs/{run_id}" if run_id else None

    def drift(self, report: dict[str, Any], previous_verdict: str | None) -> bool:
        """Input drift, only on the first window of a run of them; said as such: whether
        accuracy is at risk is another alert."""
        if report["verdict"] != "drift" or previous_verdict == "drift":
            return False
        summary = report.get("summary") or {}
        reasons = list(summary.get("reasons") or [])
        url = self._report_url(report["id"])
        window = f"{report['window_start'].isoformat()}/{report['window_end'].isoformat()}"
        risk = summary.get("accuracy_risk", "ok")
        said = {"ok": "accuracy not shown at risk", "at_risk": "accuracy at risk",
                "cannot_estimate": "accuracy cannot be estimated without labels"}.get(risk, risk)
        return self._record(
            f"drift:{report['id']}", DRIFT, report["model_name"], report["model_version"],
            f"input drift on {report['model_name']} v{report['model_version']} ({said}), "
            f"window ending {report['window_end'].isoformat()}: "
            f"{'; '.join(reasons) or 'see the report'} <{url}|report>", window=window,
            reasons=reasons, report_id=report["id"], report_url=url, accuracy_risk=risk,
            sources=list(summary.get("drifted_sources") or []))

    def accuracy(self, report: dict[str, Any], previous_risk: str | None) -> bool:
        """Accuracy at risk, or a window whose accuracy cannot be estimated without labels
        (with the labels that would settle it), each on the first window of a run."""
        summary = report.get("summary") or {}
        risk = summary.get("accuracy_risk")
        if risk not in ("at_risk", "cannot_estimate") or risk == previous_risk:
            return False
        url = self._report_url(report["id"])
        where = (f"{report['model_name']} v{report['model_version']}, window ending "
                 f"{report['window_end'].isoformat()}")
        fields = dict(window=f"{report['window_start'].isoformat()}/"
                             f"{report['window_end'].isoformat()}",
                      reasons=[summary.get("risk_reason", "")], report_id=report["id"],
                      report_url=url, accuracy_risk=risk)
        if risk == "at_risk":
            return self._record(
                f"{ACCURACY_AT_RISK}:{report['id']}", ACCURACY_AT_RISK, report["model_name"],
                report["model_version"], f"accuracy at risk on {where}: "
                f"{summary.get('risk_reason', '')} <{url}|report>", **fields)
        needed = summary.get("labels_needed")
        queue = f"{self.settings.public_url}/v1/labeling/queue?limit={needed}"
        return self._record(
            f"{LABELS_NEEDED}:{report['id']}", LABELS_NEEDED, report["model_name"],
            report["model_version"], f"accuracy cannot be estimated without labels on "
            f"{where}: {summary.get('estimate_reason', '')}; label {needed} of its "
            f"predictions ({queue}) to bound it within 5 points <{url}|report>",
            labels_needed=needed, labeling_queue_url=queue, **fields)

    def retrain_triggered(self, decision: dict[str, Any]) -> bool:
        """A retrain was decided."""
        return self._record(
            f"{RETRAIN_TRIGGERED}:{decision['id']}", RETRAIN_TRIGGERED,
            decision["model_name"], decision["model_version"],
            f"retrain triggered for {decision['model_name']} v{decision['model_version']}: "
            f"{'; '.join(decision['reasons'])}", reasons=decision["reasons"],
            decision_id=decision["id"],
            report_urls=[self._report_url(r) for r in decision["report_ids"]])

    def retrain_finished(self, decision: dict[str, Any]) -> bool:
        """The gate promoted or rejected a challenger."""
        kind = PROMOTED if decision["status"] == "promoted" else REJECTED
        gate = decision.get("gate") or {}
        run_url = self._run_url(decision.get("mlflow_run_id"))
        verb = "promoted to champion" if kind == PROMOTED else "rejected"
        return self._record(
            f"{kind}:{decision['id']}", kind, decision["model_name"],
            decision["challenger_version"],
            f"challenger v{decision['challenger_version']} of {decision['model_name']} {verb}: "
            f"{gate.get('reason', '')}" + (f" <{run_url}|MLflow run>" if run_url else ""),
            decision_id=decision["id"], parent_version=decision["model_version"],
            reasons=[gate.get("reason", "")], gate=gate, mlflow_run_url=run_url)

    def retrain_outcome(self, decision: dict[str, Any]) -> bool:
        """Alert on where a retrain ended: promoted, rejected or cancelled, or failed
        (abandoned once it has used ``max_attempts``); nothing while it is still pending or
        running."""
        if decision["status"] in ("promoted", "rejected"):
            return self.retrain_finished(decision)
        if decision["status"] == "cancelled":
            return self._record(
                f"{RETRAIN_CANCELLED}:{decision['id']}", RETRAIN_CANCELLED,
                decision["model_name"], decision["model_version"],
                f"retrain of {decision['model_name']} v{decision['model_version']} cancelled: "
                f"{decision.get('error') or ''}", decision_id=decision["id"],
                reasons=[decision.get("error") or ""],
                challenger_version=decision.get("challenger_version"))
        if decision["status"] == "failed":
            return self.retrain_failed(
                decision, decision["attempts"] >= self.settings.retrain.max_attempts)
        return False

    def retrain_failed(self, decision: dict[str, Any], abandoned: bool) -> bool:
        """A retrain failed; ``abandoned`` when it will not be tried again."""
        kind = RETRAIN_ABANDONED if abandoned else RETRAIN_FAILED
        attempt = decision.get("attempts", 0)
        what = "abandoned after" if abandoned else "failed on"
        return self._record(
            f"{kind}:{decision['id']}:{attempt}", kind, decision["model_name"],
            decision["model_version"],
            f"retrain of {decision['model_name']} v{decision['model_version']} {what} attempt "
            f"{attempt}: {(decision.get('error') or '')[:300]}", decision_id=decision["id"],
            attempts=attempt, reasons=[decision.get("error") or ""],
            mlflow_run_url=self._run_url(decision.get("mlflow_run_id")))

    def rollback(self, model: str, moved_from: str, moved_to: str) -> bool:
        """The champion was moved back by hand."""
        now = self.clock()
        return self._record(
            f"{ROLLBACK}:{model}:{moved_from}->{moved_to}:{now.isoformat()}", ROLLBACK, model,
            moved_to, f"{model} rolled back from v{moved_from} to v{moved_to}",
            moved_from=moved_from, moved_to=moved_to)

    def monitor_stale(self, model: str, version: str, last_report: dict[str, Any] | None,
                      stale_for: timedelta) -> bool:
        """Predictions arrive but no report has come for ``stale_for``."""
        last = last_report["id"] if last_report else "none"
        since = (f"since the report on the window ending "
                 f"{last_report['window_end'].isoformat()}" if last_report else "ever")
        return self._record(
            f"{MONITOR_STALE}:{model}:{last}", MONITOR_STALE, model, version,
            f"no monitoring report for {model} v{version} {since} "
            f"({stale_for.total_seconds() / 60:.0f} min): is `vidmon monitor` running?",
            last_report_id=None if last_report is None else last,
            stale_s=stale_for.total_seconds())


def post(client: httpx.Client, delivery: Delivery) -> str | None:
    """POST one alert; None when the receiver took it (2xx), else what went wrong."""
    try:
        response = client.post(delivery.url, json=delivery.payload,
                               headers={"X-Vidmon-Alert-Id": delivery.alert_id})
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if response.is_success:
        return None
    return f"HTTP {response.status_code}: {response.text[:200]}"


class Sender:
    """Posts due alerts from a thread until stopped (several senders may share a store)."""

    def __init__(self, settings: Settings, repository: AlertRepository) -> None:
        self.policy, self.repository = settings.alerts, repository
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send_due(self) -> int:
        """One pass: claim what is due, post it, record the outcome; returns posts made."""
        policy = self.policy
        due = self.repository.claim_due(system_clock(),
                                        timedelta(seconds=policy.timeout_s + 30))
        with httpx.Client(timeout=policy.timeout_s) as client:
            for delivery in due:
                error = post(client, delivery)
                now = system_clock()
                retry_at: datetime | None = None
                if error is not None and delivery.attempts + 1 < policy.max_attempts:
                    retry_at = now + timedelta(seconds=policy.backoff_s * 2 ** delivery.attempts)
                if error is not None:
                    log.warning("alert %s to %s, attempt %d: %s%s", delivery.alert_id,
                                delivery.url, delivery.attempts + 1, error,
                                "" if retry_at else " (giving up)")
                self.repository.settle(delivery, now, error, retry_at)
        return len(due)

    def start(self) -> "Sender":
        """Send from a daemon thread every ``poll_interval_s`` (nothing without webhooks)."""
        if self.policy.webhook_urls and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vidmon-alerts",
                                            daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self.send_due()
                failing = False
            except Exception as exc:  # the store may be away for a while: wait, try again
                if not failing:
                    log.warning("cannot send alerts (%s); trying every %.0f s", exc,
                                STORE_RETRY_S)
                failing = True
            self._stop.wait(STORE_RETRY_S if failing else self.policy.poll_interval_s)

    def stop(self, drain_s: float = 0.0) -> None:
        """Stop the thread, after up to ``drain_s`` seconds more of sending what is due."""
        if self._thread is None:
            return
        deadline = system_clock() + timedelta(seconds=drain_s)
        while drain_s and system_clock() < deadline and self.send_due():
            pass
        self._stop.set()
        self._thread.join(timeout=self.policy.timeout_s + 5)
        self._thread = None


def check_monitor(alerter: Alerter, predictions: PredictionRepository,
                  reports: ReportRepository, stale_after_s: float) -> bool:
    """Alert when the serving model's predictions keep coming but its last report is older
    than ``stale_after_s`` (once per stall: the alert is keyed by that report)."""
    serving = predictions.latest_model()
    if serving is None:
        return False
    name, version = serving
    last, _ = reports.list(model_name=name, limit=1)
    newest_prediction = predictions.last_created_at(source="production")
    if not last or newest_prediction is None or newest_prediction <= last[0]["window_end"]:
        return False  # never reported yet, or no traffic since: nothing is missing
    stale_for = alerter.clock() - last[0]["created_at"]
    if stale_for.total_seconds() <= stale_after_s:
        return False
    return alerter.monitor_stale(name, version, last[0], stale_for)
