"""``vidmon monitor``: the report job on an APScheduler schedule, one acting process at a time.

The job store lives in the store's database, so schedules and missed runs survive
restarts; missed runs are coalesced into one and one instance runs at a time. APScheduler 3
does not coordinate several schedulers over one job store, so processes first elect a
leader through a lease row: only the holder runs a scheduler, it renews the lease while it
lives, and a standby takes over when the lease expires.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import DBAPIError

from monitor.alerts import Sender
from monitor.clock import Clock, system_clock
from monitor.job import JobOutcome, ProfileLoader, run_report_job
from monitor.retention import GcResult
from monitor.settings import MonitorSettings
from monitor.store.reports import ReportRepository
from monitor.store.repository import PredictionRepository
from monitor.objects.workspace import EvidentlyWorkspace

log = logging.getLogger(__name__)

JOB_ID = "vidmon-report"
GC_JOB_ID = "vidmon-gc"
LEASE = "vidmon-scheduler"

# The job store pickles a reference to a module-level function, not a closure; the
# running monitor registers its context here before the scheduler starts.
_context: dict[str, Callable[[], object]] = {}


def _run_registered(key: str, job: str) -> None:
    run = _context.get(key)
    if run is None:
        log.warning("%s job fired with no monitor context; skipping", job)
        return
    run()


def scheduled_report() -> None:
    """Entry point of the report job in the job store."""
    _run_registered("run", "report")


def scheduled_gc() -> None:
    """Entry point of the retention job in the job store."""
    _run_registered("gc", "retention")


def _keep_job(scheduler: BackgroundScheduler, job_id: str, func: Callable[[], None],
              trigger: object, first_run: datetime) -> None:
    """Schedule ``func`` unless the job store holds it with the same trigger already (it
    then keeps its due time, and its missed runs coalesce into one)."""
    job = scheduler.get_job(job_id)
    if job is None or str(job.trigger) != str(trigger):
        scheduler.add_job(func, trigger, id=job_id, replace_existing=True,
                          next_run_time=first_run)


class Monitor:
    """Runs the report job on schedule while this process holds the scheduler lease."""

    def __init__(
        self,
        settings: MonitorSettings,
        predictions: PredictionRepository,
        reports: ReportRepository,
        load_profile: ProfileLoader,
        on_outcome: Callable[[JobOutcome], None] | None = None,
        workspace: EvidentlyWorkspace | None = None,
        closed_loop: Callable[[JobOutcome], None] | None = None,
        clock: Clock = system_clock,
        sender: Sender | None = None,
        collect_garbage: Callable[[], GcResult] | None = None,
        gc_interval_s: float = 3600.0,
        on_close: Callable[[], list[str]] | None = None,
    ) -> None:
        self.settings = settings
        self.on_close = on_close
        self.collect_garbage = collect_garbage
        self.gc_interval_s = gc_interval_s
        self.sender = sender
        self.predictions = predictions
        self.reports = reports
        self.load_profile = load_profile
        self.on_outcome = on_outcome
        self.workspace = workspace
        self.closed_loop = closed_loop
        self.clock = clock
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.runs = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._scheduler: BackgroundScheduler | None = None

    @property
    def is_leader(self) -> bool:
        """Whether this process's scheduler is running."""
        return self._scheduler is not None

    def run_once(self) -> JobOutcome:
        """One run of the report job (never two at once in this process)."""
        with self._lock:
            self.runs += 1
            outcome = run_report_job(self.settings, self.predictions, self.reports,
                                     self.load_profile, now=self.clock(),
                                     workspace=self.workspace)
            if self.closed_loop:
                self.closed_loop(outcome)
        if self.on_outcome:
            self.on_outcome(outcome)
        return outcome

    def run_gc(self) -> GcResult | None:
        """One garbage collection. It may run beside a report: it deletes only rows past
        their age that a report already covered, in small transactions."""
        if self.collect_garbage is None:
            return None
        result = self.collect_garbage()
        log.info("%s", result.describe())
        return result

    def _trigger(self):  # type: ignore[no-untyped-def]
        if self.settings.cron:
            return CronTrigger.from_crontab(self.settings.cron, timezone=UTC)
        # Fire lateness_s after each window's end, which is a multiple of the interval.
        interval = self.settings.interval_s
        epoch = datetime.now(UTC).timestamp()
        start = datetime.fromtimestamp(epoch - epoch % interval + self.settings.lateness_s,
                                       tz=UTC)
        return IntervalTrigger(seconds=interval, start_date=start, timezone=UTC)

    def _start_scheduler(self) -> None:
        _context["run"] = self.run_once
        scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=self.predictions.engine)},
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": max(self.settings.interval_s, 60)},
            timezone=UTC)
        # Start paused so a job stored by an earlier run keeps its due time (and its missed
        # runs coalesce into one) instead of being replaced by a fresh schedule.
        scheduler.start(paused=True)
        trigger = self._trigger()
        _keep_job(scheduler, JOB_ID, scheduled_report, trigger,
                  datetime.now(UTC) + timedelta(seconds=1))
        if self.collect_garbage is not None:
            _context["gc"] = self.run_gc
            _keep_job(scheduler, GC_JOB_ID, scheduled_gc,
                      IntervalTrigger(seconds=self.gc_interval_s, timezone=UTC),
                      datetime.now(UTC) + timedelta(seconds=self.gc_interval_s))
        elif scheduler.get_job(GC_JOB_ID) is not None:
            scheduler.remove_job(GC_JOB_ID)
        scheduler.resume()
        self._scheduler = scheduler
        log.info("%s leads: report job scheduled (%s)", self.holder, trigger)

    def _stop_scheduler(self, wait: bool = True) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=wait)
            self._scheduler = None

    @property
    def busy(self) -> bool:
        """Whether a report is being made now."""
        return self._lock.locked()

    def serve_forever(self) -> None:
        """Lead when the lease is free, stand by otherwise, until :meth:`stop`."""
        renew_every = self.settings.lease_ttl_s / 3
        if self.sender is not None:
            self.sender.start()
        try:
            while not self._stop.is_set():
                if self._holds_lease():
                    if self._scheduler is None:
                        self._start_scheduler()
                elif self._scheduler is not None:
                    log.warning("%s lost the scheduler lease; standing by", self.holder)
                    self._stop_scheduler(wait=False)
                self._stop.wait(renew_every)
        finally:
            # The lease goes first, even mid-report, so a standby takes over at once: a
            # window is stored once whoever finishes it (reports are unique per window),
            # and a report abandoned here is made by the next leader.
            try:
                self.reports.release_lease(LEASE, self.holder)
            except Exception:  # noqa: BLE001 - the store is away: the lease runs out
                log.warning("%s could not give the lease up; it runs out in %g s",
                            self.holder, self.settings.lease_ttl_s)
            self._stop_scheduler(wait=False)
            if self.sender is not None:
                self.sender.stop(drain_s=5)

    def _holds_lease(self) -> bool:
        """Take or renew the lease; False when another holds it or the store cannot be
        reached (cut off, a leader cannot know whether a standby took over meanwhile, so
        it stops acting at once and asks again at the next renewal)."""
        try:
            return self.reports.acquire_lease(LEASE, self.holder, self.settings.lease_ttl_s)
        except DBAPIError as error:
            log.warning("%s cannot reach the store to renew the lease (%s); standing by",
                        self.holder, type(error.orig).__name__ if error.orig else error)
            return False

    def stop(self) -> None:
        """Ask :meth:`serve_forever` to finish (from another thread or a signal handler)."""
        self._stop.set()

    def close(self) -> list[str]:
        """Stop the retrains this monitor started (see ``on_close``); their ids."""
        return self.on_close() if self.on_close is not None else []
