"""Long-video jobs, live streams and their events: every statement on those tables, and the
reads of a video's clips.

Jobs and streams are held the same way: the replica working on one sets ``holder`` and
renews ``heartbeat_at``; one whose heartbeat is older than the lease is free to take, so a
replica that dies hands its work over, and a conditional update makes each take one
replica's only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from monitor.store.schema import predictions, stream_events, streams, video_jobs

ACTIVE_JOBS = ("queued", "running")
FINISHED_JOBS = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class Held:
    """What a heartbeat learned: whether the replica still holds the work, and whether
    someone asked to stop it."""

    held: bool
    cancel: bool = False


def _free(table: sa.Table, holder: str, stale: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(table.c.holder.is_(None), table.c.holder == holder,
                  table.c.heartbeat_at < stale)


class VideoJobRepository:
    """Creates, hands out, tracks and finishes long-video jobs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, row: dict[str, Any]) -> None:
        """Store a new queued job (``row`` holds its id, time, location and facts)."""
        values = {"status": "queued", "clips_done": 0, "seconds_done": 0.0,
                  "cancel_requested": False, "uploaded": False, **row}
        with self.engine.begin() as connection:
            connection.execute(video_jobs.insert(), values)

    def active_count(self) -> int:
        """Jobs queued or running, on every replica."""
        with self.engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.count()).where(
                video_jobs.c.status.in_(ACTIVE_JOBS))).scalar_one())

    def get(self, job_id: str) -> dict[str, Any] | None:
        """One job's row, or None."""
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(video_jobs).where(
                video_jobs.c.id == job_id)).mappings().first()
        return None if row is None else dict(row)

    def claim(self, holder: str, lease_s: float, now: datetime,
              readable: Callable[[str], bool] = lambda location: True
              ) -> dict[str, Any] | None:
        """The oldest job waiting, or running on a replica whose heartbeat stopped, now
        held by ``holder``; None when there is none. An uploaded file lies on the disk of
        the replica that took it in: a job whose file ``readable`` says this replica cannot
        see is left for one that can."""
        stale = now - timedelta(seconds=lease_s)
        waiting = sa.or_(video_jobs.c.status == "queued",
                         sa.and_(video_jobs.c.status == "running",
                                 video_jobs.c.heartbeat_at < stale))
        with self.engine.connect() as connection:
            candidates = [row.id for row in connection.execute(
                sa.select(video_jobs.c.id, video_jobs.c.location, video_jobs.c.uploaded)
                .where(waiting).order_by(video_jobs.c.created_at).limit(20))
                if not row.uploaded or readable(row.location)]
        for job_id in candidates:
            with self.engine.begin() as connection:
                taken = connection.execute(video_jobs.update().where(
                    video_jobs.c.id == job_id, waiting).values(
                    status="running", holder=holder, heartbeat_at=now)).rowcount
            if taken:
                return self.get(job_id)
        return None

    def heartbeat(self, job_id: str, holder: str, now: datetime, **progress: Any) -> Held:
        """Renew ``holder``'s hold and record progress (clips_done, seconds_done, ...)."""
        with self.engine.begin() as connection:
            row = connection.execute(
                video_jobs.update().where(video_jobs.c.id == job_id,
                                          video_jobs.c.holder == holder,
                                          video_jobs.c.status == "running")
                .values(heartbeat_at=now, **progress)
                .returning(video_jobs.c.cancel_requested)).first()
        return Held(False) if row is None else Held(True, bool(row[0]))

    def release(self, job_id: str, holder: str) -> None:
        """Give a running job back (a replica shutting down), so it is taken at once, by
        this replica after a restart or by another, where it stopped."""
        with self.engine.begin() as connection:
            connection.execute(video_jobs.update().where(
                video_jobs.c.id == job_id, video_jobs.c.holder == holder,
                video_jobs.c.status == "running").values(status="queued", holder=None,
                                                        heartbeat_at=None))

    def finish(self, job_id: str, holder: str, status: str, now: datetime,
               **outcome: Any) -> bool:
        """End ``holder``'s job as ``status`` (done, failed, cancelled) with its outcome
        (label, confidence, error, ...); False if it no longer held it."""
        assert status in FINISHED_JOBS
        with self.engine.begin() as connection:
            return bool(connection.execute(
                video_jobs.update().where(video_jobs.c.id == job_id,
                                          video_jobs.c.holder == holder,
                                          video_jobs.c.status == "running")
                .values(status=status, finished_at=now, holder=None, **outcome)).rowcount)

    def cancel(self, job_id: str, now: datetime) -> dict[str, Any] | None:
        """Cancel a job: a queued one at once, a running one at its next heartbeat (its
        replica stops it); a finished one stays as it was. The row after, or None."""
        with self.engine.begin() as connection:
            connection.execute(video_jobs.update().where(
                video_jobs.c.id == job_id, video_jobs.c.status == "queued").values(
                status="cancelled", finished_at=now, error="cancelled before it started"))
            connection.execute(video_jobs.update().where(
                video_jobs.c.id == job_id, video_jobs.c.status == "running").values(
                cancel_requested=True))
        return self.get(job_id)

    def clips(self, job_id: str, with_scores: bool = False) -> list[dict[str, Any]]:
        """The job's logged clips in time order: id, span, label, confidence (and each
        class's probability with ``with_scores``)."""
        columns = [predictions.c.id, predictions.c.clip_start_s, predictions.c.clip_end_s,
                   predictions.c.predicted_label, predictions.c.confidence]
        if with_scores:
            columns.append(predictions.c.probabilities)
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(*columns).where(predictions.c.video_id == job_id,
                                          predictions.c.clip_start_s.is_not(None))
                .order_by(predictions.c.clip_start_s, predictions.c.id)).mappings().all()
        return [dict(r) for r in rows]

    def probability_sums(self, job_id: str) -> dict[str, float]:
        """Each class's probability summed over the job's clips (their mean's numerator)."""
        sums: dict[str, float] = {}
        with self.engine.connect() as connection:
            for (probabilities,) in connection.execute(sa.select(
                    predictions.c.probabilities).where(predictions.c.video_id == job_id)):
                for label, p in probabilities.items():
                    sums[label] = sums.get(label, 0.0) + float(p)
        return sums

    def label_span(self, job_id: str, start_s: float, end_s: float, label: str,
                   now: datetime) -> int:
        """Label the job's clips whose middle lies in [start_s, end_s); how many."""
        middle = (predictions.c.clip_start_s + predictions.c.clip_end_s) / 2
        with self.engine.begin() as connection:
            return int(connection.execute(predictions.update().where(
                predictions.c.video_id == job_id, middle >= start_s, middle < end_s,
                sa.or_(predictions.c.labeled_at.is_(None), predictions.c.labeled_at <= now))
                .values(true_label=label, labeled_at=now)).rowcount)


class StreamRepository:
    """Registers, hands out and stops live streams; records their label changes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, row: dict[str, Any]) -> None:
        """Store a new active stream."""
        with self.engine.begin() as connection:
            connection.execute(streams.insert(), {"status": "active", "state": "starting",
                                                  **row})

    def get(self, stream_id: str) -> dict[str, Any] | None:
        """One stream's row, or None."""
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(streams).where(
                streams.c.id == stream_id)).mappings().first()
        return None if row is None else dict(row)

    def active(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The streams not stopped, oldest first."""
        with self.engine.connect() as connection:
            return [dict(r) for r in connection.execute(
                sa.select(streams).where(streams.c.status == "active")
                .order_by(streams.c.created_at).limit(limit)).mappings()]

    def claim(self, stream_id: str, holder: str, lease_s: float, now: datetime) -> bool:
        """Take or renew the hold on an active stream; False if another replica has it."""
        stale = now - timedelta(seconds=lease_s)
        with self.engine.begin() as connection:
            return bool(connection.execute(streams.update().where(
                streams.c.id == stream_id, streams.c.status == "active",
                _free(streams, holder, stale)).values(holder=holder, heartbeat_at=now)
            ).rowcount)

    def report(self, stream_id: str, holder: str, now: datetime, **state: Any) -> bool:
        """Renew ``holder``'s hold and record the stream's state; False if it lost it."""
        with self.engine.begin() as connection:
            return bool(connection.execute(streams.update().where(
                streams.c.id == stream_id, streams.c.holder == holder,
                streams.c.status == "active").values(heartbeat_at=now, **state)).rowcount)

    def release(self, stream_id: str, holder: str) -> None:
        """Give the stream up (on shutdown), so another replica takes it at once."""
        with self.engine.begin() as connection:
            connection.execute(streams.update().where(
                streams.c.id == stream_id, streams.c.holder == holder).values(
                holder=None, heartbeat_at=None))

    def stop(self, stream_id: str, now: datetime) -> dict[str, Any] | None:
        """Stop a stream (its replica stops pulling at its next heartbeat); the row after."""
        with self.engine.begin() as connection:
            connection.execute(streams.update().where(
                streams.c.id == stream_id, streams.c.status == "active").values(
                status="stopped", state="stopped", stopped_at=now))
        return self.get(stream_id)

    def add_event(self, row: dict[str, Any]) -> None:
        """Record a label change."""
        with self.engine.begin() as connection:
            connection.execute(stream_events.insert(), row)

    def events(self, stream_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The stream's newest ``limit`` label changes, oldest first."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(stream_events.c.created_at, stream_events.c.at_s,
                          stream_events.c.label, stream_events.c.confidence,
                          stream_events.c.model_version)
                .where(stream_events.c.stream_id == stream_id)
                .order_by(stream_events.c.id.desc()).limit(limit)).mappings().all()
        return [dict(r) for r in rows][::-1]
