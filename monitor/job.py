"""The report job: load the serving model version's window and reference, report, store.

The job is idempotent per window: windows end on multiples of the interval and a window
already reported is skipped, so a restarted or coalesced scheduler never reports twice. A
window is reported only ``lateness_s`` after it ends: a replica that lost the store spools
its records and replays them when the store answers again, and those rows must be in the
window before it is judged (a report is never rebuilt).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from monitor.profile import ReferenceProfile
from monitor.reference import store_reference
from monitor.report import ReportPolicy, build_report
from monitor.settings import MonitorSettings
from monitor.store.reports import ReportRepository
from monitor.store.records import as_utc
from monitor.store.repository import PredictionRepository
from monitor.objects.workspace import EvidentlyWorkspace

log = logging.getLogger(__name__)

ProfileLoader = Callable[[str, str], ReferenceProfile]


@dataclass(frozen=True)
class JobOutcome:
    """What one run of the job did."""

    status: str  # reported | already_reported | no_traffic
    report_id: str | None = None
    verdict: str | None = None
    window_end: datetime | None = None
    model_name: str | None = None
    model_version: str | None = None


def window_end_for(now: datetime, interval_s: int) -> datetime:
    """The latest interval boundary at or before ``now`` (UTC)."""
    epoch = now.astimezone(UTC).timestamp()
    return datetime.fromtimestamp(epoch - epoch % interval_s, tz=UTC)


def _first_time(frame, default: datetime) -> datetime:
    """Time of a window's first row, as an aware UTC datetime."""
    if not len(frame):
        return default
    return as_utc(frame["created_at"].min().to_pydatetime())


def report_policy(settings: MonitorSettings) -> ReportPolicy:
    """The verdict's thresholds from the monitor's settings."""
    return ReportPolicy(alpha=settings.alpha, min_rows=settings.min_rows,
                        verdict_tests=tuple(settings.verdict_tests),
                        min_wasserstein=settings.min_wasserstein, min_psi=settings.min_psi,
                        min_auc=settings.min_auc)


def run_report_job(
    settings: MonitorSettings,
    predictions: PredictionRepository,
    reports: ReportRepository,
    load_profile: ProfileLoader,
    now: datetime | None = None,
    workspace: EvidentlyWorkspace | None = None,
) -> JobOutcome:
    """Report on the window that ended at the last interval boundary; the Evidently runs
    are also added to ``workspace`` when one is given."""
    now = now or datetime.now(UTC)
    end = window_end_for(now - timedelta(seconds=settings.lateness_s), settings.interval_s)
    serving = predictions.latest_model(until=end)
    if serving is None:
        log.info("no production predictions before %s; nothing to report", end.isoformat())
        return JobOutcome("no_traffic", window_end=end)
    model_name, model_version = serving
    if reports.has_report(model_name, model_version, end):
        return JobOutcome("already_reported", window_end=end, model_name=model_name,
                          model_version=model_version)
    since = end - timedelta(minutes=settings.window_minutes) if settings.window_minutes else None
    current = predictions.load_window(model_name, model_version, since=since, until=end,
                                      last=settings.window_predictions,
                                      sample=settings.sample_rows)
    if current.total_rows == 0:
        # A quiet window is not a report: idle hours would otherwise pile up as
        # "insufficient data" (the dashboard shows the gap as one quiet span).
        log.info("no predictions of %s v%s in the window to %s; nothing to report",
                 model_name, model_version, end.isoformat())
        return JobOutcome("no_traffic", window_end=end, model_name=model_name,
                          model_version=model_version)
    profile = load_profile(model_name, model_version)
    store_reference(predictions, profile, model_name, model_version)
    reference = predictions.load_window(model_name, model_version, source="reference",
                                        sample=settings.sample_rows)
    start = since or _first_time(current.frame, end)
    sources = sorted(current.frame["source_id"].dropna().unique())
    baseline = predictions.source_history(
        model_name, sources, since=start - timedelta(hours=settings.source_baseline_hours),
        until=start, per_source=settings.source_baseline_rows) if sources else None
    report = build_report(
        reference, current, profile.label_names, model_name=model_name,
        model_version=model_version, window_start=start, window_end=end,
        policy=report_policy(settings), estimator=profile.estimator,
        source_baseline=baseline)
    report_id = reports.save(report, now)
    if report_id is None:
        return JobOutcome("already_reported", window_end=end, model_name=model_name,
                          model_version=model_version)
    if workspace is not None and report.snapshots:
        workspace.add(report.snapshots, f"{model_name} v{model_version} {end.isoformat()}")
    log.info("report %s on %s v%s, window to %s: %s (%d rows, %d labeled)", report_id,
             model_name, model_version, end.isoformat(), report.summary.verdict,
             report.summary.rows, report.summary.labeled_rows)
    return JobOutcome("reported", report_id, report.summary.verdict, end, model_name,
                      model_version)
