"""Retention: a bound on what vidmon keeps, applied by ``vidmon gc`` and by the monitor on
its schedule.

In order, each step in transactions of at most ``batch_rows`` rows:

1. Production predictions older than ``prediction_days`` (labeled ones: ``labeled_days``)
   are deleted, but only up to the end of the newest report on their model version: a row
   goes once a report has summarised it. Reference rows are never deleted, nor the labeled
   rows (and clips) of a retrain that may still run. A retrain's MLflow run lists the clips
   it used, so its lineage outlives them.
2. Clips whose newest prediction is older than ``clip_days`` are released (the rows keep
   everything but ``clip_path``).
3. Clip files no row refers to are deleted once ``clip_grace_s`` old.
4. While the clip store is over ``clip_max_mb``, the oldest clips are released and deleted.
5. Reports older than ``report_days`` lose their Evidently snapshot and page (their summary
   stays), unless a retrain decision cites them. Their copies in the Evidently workspace,
   when one is set, go by age alone (the store keeps the cited ones).
6. Labels that waited ``prediction_days`` for a prediction that never landed are dropped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine

from monitor.objects.clips import ClipStore
from monitor.clock import Clock, system_clock
from monitor.settings import RetentionSettings, Settings
from monitor.store.reports import ReportRepository
from monitor.store.retention import Expiry, Protected, RetentionRepository
from monitor.objects.workspace import EvidentlyWorkspace

log = logging.getLogger(__name__)

MB = 1_000_000


@dataclass
class GcResult:
    """What one garbage collection did (or, in a dry run, would do)."""

    dry_run: bool = False
    predictions_deleted: int = 0
    # Rows past their age that stay because no report covers their model version yet.
    predictions_unreported: dict[str, int] = field(default_factory=dict)
    clip_rows_released: int = 0
    clip_files_deleted: int = 0
    clip_bytes_freed: int = 0
    clip_files: int = 0
    clip_bytes: int = 0
    clip_bytes_limit: int | None = None
    reports_pruned: int = 0
    workspace_runs_pruned: int = 0  # copies in the Evidently workspace
    pending_labels_deleted: int = 0
    protected_models: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return asdict(self)

    def describe(self) -> str:
        """One line for a log or a person."""
        limit = ("no limit" if self.clip_bytes_limit is None
                 else f"{self.clip_bytes_limit / MB:,.0f} MB allowed")
        verb = "would delete" if self.dry_run else "deleted"
        line = (f"retention {verb} {self.predictions_deleted:,} predictions, released "
                f"{self.clip_rows_released:,} clips ({self.clip_files_deleted:,} files, "
                f"{self.clip_bytes_freed / MB:,.1f} MB freed), pruned "
                f"{self.reports_pruned:,} report pages and {self.workspace_runs_pruned:,} "
                f"Evidently workspace runs; the clip store holds "
                f"{self.clip_files:,} clips in {self.clip_bytes / MB:,.1f} MB ({limit})")
        if self.predictions_unreported:
            line += f"; kept until a report covers them: {self.predictions_unreported}"
        return line


Progress = Callable[[str], None]


class GarbageCollector:
    """Applies :class:`RetentionSettings` to one store and clip folder."""

    def __init__(self, settings: RetentionSettings, retention: RetentionRepository,
                 reports: ReportRepository, clips: ClipStore, *, max_attempts: int,
                 workspace: EvidentlyWorkspace | None = None, clock: Clock = system_clock,
                 progress: Progress = log.info) -> None:
        self.settings = settings
        self.workspace = workspace
        self.retention = retention
        self.reports = reports
        self.clips = clips
        self.max_attempts = max_attempts
        self.clock = clock
        self.progress = progress

    def run(self, dry_run: bool = False) -> GcResult:
        """One pass; a dry run only counts the rows and reports that would go."""
        started = time.monotonic()
        now = self.clock()
        s = self.settings
        result = GcResult(dry_run=dry_run)
        protected = self._protected()
        result.protected_models = sorted({p.model_name for p in protected})
        if s.prediction_days is not None:
            self._predictions(now, protected, result, dry_run)
        if not dry_run:
            if s.clip_days is not None:
                self._release(now - timedelta(days=s.clip_days), protected, result)
            result.clip_files, result.clip_bytes = self._sweep(result)
            if s.clip_max_mb is not None:
                self._shrink(s.clip_max_mb * MB, protected, result)
            if s.prediction_days is not None:
                result.pending_labels_deleted = self.retention.delete_pending_labels(
                    now - timedelta(days=s.prediction_days))
        else:
            for files in self.clips.buckets():
                result.clip_files += len(files)
                result.clip_bytes += sum(f.size for f in files)
        result.clip_bytes_limit = None if s.clip_max_mb is None else s.clip_max_mb * MB
        if s.report_days is not None:
            before = now - timedelta(days=s.report_days)
            result.reports_pruned = (self.retention.count_prunable_reports(before) if dry_run
                                     else self._batches(lambda: self.retention.prune_reports(
                                         before, min(s.batch_rows, 500))))
            if self.workspace is not None:
                result.workspace_runs_pruned = self.workspace.prune(before, dry_run)
        result.seconds = round(time.monotonic() - started, 3)
        return result

    def _protected(self) -> tuple[Protected, ...]:
        """The training data of every retrain that may still run."""
        return tuple(Protected(name, self.reports.first_window_start(report_ids))
                     for name, report_ids in self.retention.active_retrains(self.max_attempts))

    def _batches(self, step: Callable[[], int], every: Callable[[int], None] | None = None
                 ) -> int:
        """Run ``step`` (one transaction) until it does nothing, pausing ``pause_s`` between
        runs and calling ``every`` with the running total after each 20th; the total."""
        total, runs = 0, 0
        while (done := step()) > 0:
            total, runs = total + done, runs + 1
            if every is not None and runs % 20 == 0:
                every(total)
            if self.settings.pause_s:
                time.sleep(self.settings.pause_s)
        return total

    def _predictions(self, now: datetime, protected: tuple[Protected, ...], result: GcResult,
                     dry_run: bool) -> None:
        s = self.settings
        before = now - timedelta(days=s.prediction_days or 0)
        labeled_before = (None if s.labeled_days is None
                          else now - timedelta(days=s.labeled_days))
        result.predictions_unreported = {
            f"{name} v{version}": n
            for (name, version), n in self.retention.unreported_versions(before).items()}
        for (name, version), reported in sorted(self.retention.reported_until().items()):
            expiry = Expiry(name, version, min(before, reported), labeled_before, protected)
            expected = self.retention.count_expired(expiry)
            if dry_run or expected == 0:
                result.predictions_deleted += expected
                continue
            result.predictions_deleted += self._delete(expiry, expected, result)
        if result.predictions_unreported:
            self.progress(f"kept predictions no report covers yet: "
                          f"{result.predictions_unreported}")

    def _delete(self, expiry: Expiry, expected: int, result: GcResult) -> int:
        """Delete one version's expired rows batch by batch, and the clips they leave
        unused; the rows deleted."""
        what = f"predictions of {expiry.model_name} v{expiry.model_version}"
        self.progress(f"deleting {expected:,} {what} made before {expiry.before.isoformat()}")

        def delete() -> int:
            paths = self.retention.delete_expired(expiry, self.settings.batch_rows)
            self._free([p for p in paths if p], result)
            return len(paths)

        return self._batches(delete, lambda done: self.progress(
            f"deleted {done:,} of {expected:,} {what}"))

    def _release(self, before: datetime, protected: tuple[Protected, ...],
                 result: GcResult) -> None:
        """Release the clips of rows made before ``before``, deleting files left unused."""
        def release() -> int:
            paths = self.retention.release_clips(self.settings.batch_rows, before, protected)
            self._free(paths, result)
            return len(paths)

        result.clip_rows_released += self._batches(release)

    def _grace_start(self) -> float:
        # File times are the file system's (wall) time, whatever clock the data runs on.
        return time.time() - self.settings.clip_grace_s

    def _free(self, paths: list[str], result: GcResult) -> int:
        """Delete the files among ``paths`` that no row refers to any more; bytes freed."""
        unique = sorted(set(paths))
        if not unique:
            return 0
        still = self.retention.referenced(unique)
        saved_before = self._grace_start()
        freed = 0
        for path in unique:
            if path not in still and (size := self.clips.delete(path, saved_before)):
                freed += size
                result.clip_files_deleted += 1
                result.clip_files -= 1
        result.clip_bytes_freed += freed
        return freed

    def _sweep(self, result: GcResult) -> tuple[int, int]:
        """Delete files no row refers to (past the grace period); the files and bytes the
        store holds after."""
        kept, total = 0, 0
        for files in self.clips.buckets():
            saved_before = self._grace_start()
            old = [f for f in files if f.saved_at < saved_before]  # the rest may be queued
            still = self.retention.referenced([f.key for f in old])
            for f in files:
                if (f.saved_at < saved_before and f.key not in still
                        and self.clips.delete(f.key, saved_before)):
                    result.clip_files_deleted += 1
                    result.clip_bytes_freed += f.size
                else:
                    kept += 1
                    total += f.size
        return kept, total

    def _shrink(self, limit: int, protected: tuple[Protected, ...], result: GcResult) -> None:
        """Release the oldest clips until the store fits in ``limit`` bytes."""
        if result.clip_bytes <= limit:
            return
        self.progress(f"clip store holds {result.clip_bytes / MB:,.0f} MB, over its "
                      f"{limit / MB:,.0f} MB limit: releasing the oldest clips")
        while result.clip_bytes > limit:
            # Release about half the clips the excess amounts to at a time, so that the
            # store ends near its limit, not a whole batch below it.
            mean = result.clip_bytes / max(result.clip_files, 1)
            wanted = math.ceil((result.clip_bytes - limit) / mean / 2)
            paths = self.retention.release_clips(min(max(wanted, 1), self.settings.batch_rows),
                                                 None, protected)
            if not paths:
                self.progress(f"clip store still holds {result.clip_bytes / MB:,.0f} MB: "
                              f"what is left is needed by a pending retrain or was saved "
                              f"in the last {self.settings.clip_grace_s:.0f} s")
                break
            result.clip_rows_released += len(paths)
            result.clip_bytes -= self._free(paths, result)


def build_collector(settings: Settings, engine: Engine, clock: Clock = system_clock,
                    progress: Progress = log.info) -> GarbageCollector:
    """A collector over the settings' store and clip folder."""
    return GarbageCollector(settings.retention, RetentionRepository(engine),
                            ReportRepository(engine), ClipStore.of(settings),
                            max_attempts=settings.retrain.max_attempts,
                            workspace=EvidentlyWorkspace.of(settings),
                            clock=clock, progress=progress)


def gc_command(settings: Settings, dry_run: bool) -> int:
    """``vidmon gc``: apply the retention settings once; progress on stderr, the result as
    JSON on stdout."""
    import json
    import sys

    from sqlalchemy.engine import make_url

    from monitor.store import create_store_engine, upgrade_database

    store = make_url(settings.database_url).render_as_string(hide_password=True)
    print(f"vidmon gc: {'counting (dry run) in' if dry_run else 'collecting in'} the store "
          f"{store} and the clip store {ClipStore.of(settings).location}", file=sys.stderr,
          flush=True)
    engine = create_store_engine(settings.database_url)
    upgrade_database(engine)
    try:
        result = build_collector(settings, engine, progress=lambda line: print(
            f"vidmon gc: {line}", file=sys.stderr, flush=True)).run(dry_run=dry_run)
    finally:
        engine.dispose()
    print(json.dumps(result.to_dict()))
    return 0
