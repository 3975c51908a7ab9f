"""Retrain decisions and their lifecycle: the SQL of the closed loop lives here."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from monitor.retrain_policy import RetrainDecision
from monitor.store.records import as_utc, json_safe
from monitor.store.reports import as_row
from monitor.store.schema import retrain_decisions as decisions

ACTIVE = ("pending", "running")
FINISHED = ("promoted", "rejected", "cancelled")


class RetrainRepository:
    """Stores every decision; moves triggered ones through pending -> running -> result."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, decision: RetrainDecision, model_name: str, model_version: str,
               now: datetime | None = None) -> str:
        """Store a decision made at ``now``; a triggered one starts as ``pending``, due. A
        model has at most one pending decision (a unique index says so): triggering while
        one is pending returns the pending one's id, whoever raced to insert it, unless it
        was decided for another version: a champion replaced since then makes it moot, so
        it is cancelled and this one takes its place."""
        decision_id = uuid.uuid4().hex
        now = now or datetime.now(UTC)
        row = {"id": decision_id, "created_at": now, "model_name": model_name,
               "model_version": model_version, "triggered": decision.triggered,
               "reasons": decision.reasons, "report_ids": decision.report_ids,
               "status": "pending" if decision.triggered else "not_triggered",
               "attempts": 0, "next_attempt_at": now if decision.triggered else None}
        for _ in range(2):
            try:
                with self.engine.begin() as connection:
                    connection.execute(decisions.insert(), row)
                return decision_id
            except IntegrityError:
                pending = self.pending(model_name)
                if pending is None:  # it started between our insert and this read
                    raise
                if pending["model_version"] == model_version:
                    return pending["id"]
                self._supersede(pending["id"], model_version, now)
        raise RuntimeError(f"could not record a retrain decision for {model_name}")

    def _supersede(self, decision_id: str, model_version: str, now: datetime) -> None:
        with self.engine.begin() as connection:
            connection.execute(decisions.update().where(
                decisions.c.id == decision_id, decisions.c.status == "pending").values(
                status="cancelled", finished_at=now,
                error=f"superseded by a decision for v{model_version}, the champion now"))

    def pending(self, model_name: str) -> dict[str, Any] | None:
        """The model's pending decision, if any."""
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(decisions).where(
                decisions.c.model_name == model_name,
                decisions.c.status == "pending")).mappings().first()
        return None if row is None else _timestamps(row)

    def get(self, decision_id: str) -> dict[str, Any] | None:
        """One decision."""
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(decisions).where(decisions.c.id == decision_id)).mappings().first()
        return None if row is None else _timestamps(row)

    def list(self, model_name: str | None = None, limit: int = 100,
             triggered_only: bool = False) -> list[dict[str, Any]]:
        """Decisions, newest first."""
        query = sa.select(decisions)
        if model_name is not None:
            query = query.where(decisions.c.model_name == model_name)
        if triggered_only:
            query = query.where(decisions.c.triggered.is_(True))
        query = query.order_by(decisions.c.created_at.desc()).limit(limit)
        with self.engine.connect() as connection:
            return [_timestamps(r) for r in connection.execute(query).mappings()]

    def last_retrain_at(self, model_name: str) -> datetime | None:
        """When the latest triggered decision of this model was made."""
        query = sa.select(sa.func.max(decisions.c.created_at)).where(
            decisions.c.model_name == model_name, decisions.c.triggered.is_(True))
        with self.engine.connect() as connection:
            return as_utc(connection.execute(query).scalar_one_or_none())

    def next_due(self, now: datetime, max_attempts: int) -> dict[str, Any] | None:
        """The oldest pending or failed decision whose next attempt is due, unless a retrain
        is running (one at a time)."""
        with self.engine.connect() as connection:
            running = connection.execute(sa.select(sa.func.count()).select_from(decisions).where(
                decisions.c.status == "running")).scalar_one()
            if running:
                return None
            row = connection.execute(
                sa.select(decisions)
                .where(decisions.c.status.in_(("pending", "failed")),
                       decisions.c.attempts < max_attempts,
                       decisions.c.next_attempt_at <= now)
                .order_by(decisions.c.created_at).limit(1)).mappings().first()
        return None if row is None else _timestamps(row)

    def start(self, decision_id: str) -> bool:
        """Mark a due decision running; False if someone else already did."""
        with self.engine.begin() as connection:
            changed = connection.execute(
                decisions.update()
                .where(decisions.c.id == decision_id,
                       decisions.c.status.in_(("pending", "failed")))
                .values(status="running", attempts=decisions.c.attempts + 1)).rowcount
        return bool(changed)

    def claim(self, holder: str, now: datetime, lease_s: float, max_attempts: int
              ) -> dict[str, Any] | None:
        """For a worker: the running retrain whose worker stopped renewing its hold for
        ``lease_s`` (taken over), else the oldest due decision while none runs, now running
        and held by ``holder``; None when there is none. One conditional update decides
        between workers racing for it; a takeover counts as an attempt, so a retrain that
        kills its workers ends failed instead of looping."""
        stale = now - timedelta(seconds=lease_s)
        abandoned = sa.and_(decisions.c.status == "running", decisions.c.heartbeat_at < stale)
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(decisions.c.id).where(abandoned)
                                     .order_by(decisions.c.created_at).limit(1)).first()
        condition = abandoned
        if row is None:
            due = self.next_due(now, max_attempts)
            if due is None:
                return None
            row = (due["id"],)
            condition = sa.and_(decisions.c.status.in_(("pending", "failed")),
                                decisions.c.attempts < max_attempts)
        with self.engine.begin() as connection:
            taken = connection.execute(decisions.update().where(
                decisions.c.id == row[0], condition).values(
                status="running", attempts=decisions.c.attempts + 1, holder=holder,
                heartbeat_at=now)).rowcount
        return self.get(row[0]) if taken else None

    def heartbeat(self, decision_id: str, holder: str, now: datetime) -> bool:
        """Renew ``holder``'s hold on a running retrain; False once it is not held by it
        (taken over, or finished)."""
        with self.engine.begin() as connection:
            return bool(connection.execute(decisions.update().where(
                decisions.c.id == decision_id, decisions.c.holder == holder,
                decisions.c.status == "running").values(heartbeat_at=now)).rowcount)

    def give_back(self, decision_id: str, holder: str, now: datetime) -> bool:
        """A worker that stops hands its retrain back, due at once and with the attempt
        not counted, for another worker; False if it no longer held it."""
        with self.engine.begin() as connection:
            return bool(connection.execute(decisions.update().where(
                decisions.c.id == decision_id, decisions.c.holder == holder,
                decisions.c.status == "running").values(
                status="failed", attempts=decisions.c.attempts - 1, holder=None,
                heartbeat_at=None, next_attempt_at=now,
                error=f"given back by worker {holder} as it stopped")).rowcount)

    def holds(self, decision_id: str, holder: str) -> bool:
        """Whether ``holder`` still holds the running retrain (checked before promoting)."""
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(decisions).where(
                decisions.c.id == decision_id, decisions.c.holder == holder,
                decisions.c.status == "running")).scalar_one() > 0

    def fail(self, decision_id: str, error: str, backoff: timedelta,
             now: datetime | None = None) -> None:
        """Mark a running retrain failed at ``now``; it is retried after ``backoff`` x
        2^(attempts-1)."""
        now = now or datetime.now(UTC)
        with self.engine.begin() as connection:
            attempts = connection.execute(sa.select(decisions.c.attempts).where(
                decisions.c.id == decision_id)).scalar_one()
            connection.execute(decisions.update().where(decisions.c.id == decision_id).values(
                status="failed", error=error[-4000:],
                next_attempt_at=now + backoff * 2 ** max(attempts - 1, 0)))

    def finish(self, decision_id: str, *, status: str, run_id: str, version: str,
               gate: dict[str, Any], now: datetime | None = None,
               error: str | None = None) -> None:
        """Record a retrain finished at ``now`` (``promoted``, ``rejected`` or
        ``cancelled``) and its gate."""
        if status not in FINISHED:
            raise ValueError(f"a finished retrain is one of {FINISHED}, not {status!r}")
        with self.engine.begin() as connection:
            connection.execute(decisions.update().where(decisions.c.id == decision_id).values(
                status=status, mlflow_run_id=run_id, challenger_version=version,
                gate=json_safe(gate), finished_at=now or datetime.now(UTC), error=error))

    def cancel(self, decision_id: str, reason: str, now: datetime | None = None) -> None:
        """Cancel a decision that no longer applies (the champion it was made for was
        replaced); it is never retried."""
        with self.engine.begin() as connection:
            connection.execute(decisions.update().where(decisions.c.id == decision_id).values(
                status="cancelled", error=reason[-4000:], finished_at=now or datetime.now(UTC)))

    def attach_run(self, decision_id: str, run_id: str) -> None:
        """Link the MLflow run as soon as it exists (visible while it trains)."""
        with self.engine.begin() as connection:
            connection.execute(decisions.update().where(decisions.c.id == decision_id)
                               .values(mlflow_run_id=run_id))


def _timestamps(row: Any) -> dict[str, Any]:
    data = as_row(row)
    for key in ("next_attempt_at", "finished_at"):
        data[key] = as_utc(data.get(key))
    return data
