"""Alerts and their deliveries: the SQL of notifications lives here.

An alert is recorded once under its key, in the same transaction as one delivery row per
webhook. Senders claim due deliveries with a conditional update, so two senders (the
monitor and an API replica) never post the same one at once; a claim that is not settled
(the sender died mid-post) expires and the delivery is tried again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from monitor.store.engine import insert_ignoring_duplicates
from monitor.store.records import as_utc, json_safe
from monitor.store.schema import alert_deliveries as deliveries
from monitor.store.schema import alerts


@dataclass(frozen=True)
class Delivery:
    """One alert to post to one webhook."""

    alert_id: str
    url: str
    attempts: int
    payload: dict[str, Any]


class AlertRepository:
    """Records alerts once and tracks their delivery to each webhook."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, alert_id: str, kind: str, model_name: str, model_version: str | None,
               payload: dict[str, Any], urls: list[str], *, created_at: datetime,
               due_at: datetime) -> bool:
        """Store the alert (made at ``created_at``) and a delivery per URL due at
        ``due_at`` (on the senders' wall clock); False, and nothing changed, when an alert
        with this id was already recorded."""
        with self.engine.begin() as connection:
            # RETURNING says whether the row went in (PostgreSQL reports no rowcount here)
            added = connection.execute(
                insert_ignoring_duplicates(self.engine, alerts, ["id"]).returning(alerts.c.id),
                {"id": alert_id, "kind": kind, "created_at": created_at,
                 "model_name": model_name, "model_version": model_version,
                 "payload": json_safe(payload)}).first() is not None
            if added and urls:
                connection.execute(deliveries.insert(), [
                    {"alert_id": alert_id, "url": url, "status": "pending", "attempts": 0,
                     "next_attempt_at": due_at} for url in dict.fromkeys(urls)])
        return added

    def claim_due(self, now: datetime, hold: timedelta, limit: int = 20) -> list[Delivery]:
        """Deliveries due at ``now`` (pending, or claimed by a sender whose hold ran out),
        each claimed for ``hold``: only one caller gets each."""
        due = (sa.select(deliveries.c.alert_id, deliveries.c.url, deliveries.c.attempts,
                         deliveries.c.status, deliveries.c.next_attempt_at, alerts.c.payload)
               .join(alerts, alerts.c.id == deliveries.c.alert_id)
               .where(deliveries.c.status.in_(("pending", "sending")),
                      deliveries.c.next_attempt_at <= now)
               .order_by(deliveries.c.next_attempt_at).limit(limit))
        claimed = []
        with self.engine.begin() as connection:
            for row in connection.execute(due).mappings().all():
                taken = connection.execute(
                    deliveries.update()
                    .where(deliveries.c.alert_id == row["alert_id"],
                           deliveries.c.url == row["url"],
                           deliveries.c.status == row["status"],
                           deliveries.c.next_attempt_at == row["next_attempt_at"])
                    .values(status="sending", next_attempt_at=now + hold)).rowcount
                if taken:
                    claimed.append(Delivery(row["alert_id"], row["url"], row["attempts"],
                                            row["payload"]))
        return claimed

    def settle(self, delivery: Delivery, now: datetime, error: str | None,
               retry_at: datetime | None) -> None:
        """After a try: sent (no ``error``), due again at ``retry_at``, or given up (an
        ``error`` and no ``retry_at``)."""
        values: dict[str, Any] = {"attempts": delivery.attempts + 1}
        if error is None:
            values |= {"status": "sent", "sent_at": now, "last_error": None}
        else:
            values |= {"status": "pending" if retry_at else "failed",
                       "next_attempt_at": retry_at or now, "last_error": error[-2000:]}
        with self.engine.begin() as connection:
            connection.execute(deliveries.update().where(
                deliveries.c.alert_id == delivery.alert_id, deliveries.c.url == delivery.url,
                deliveries.c.status == "sending").values(**values))

    def list(self, limit: int = 50, since: datetime | None = None) -> list[dict[str, Any]]:
        """Alerts, newest first, each with its deliveries."""
        query = sa.select(alerts).order_by(alerts.c.created_at.desc()).limit(limit)
        if since is not None:
            query = query.where(alerts.c.created_at >= since)
        with self.engine.connect() as connection:
            rows = [dict(r) for r in connection.execute(query).mappings()]
            ids = [r["id"] for r in rows]
            sent = connection.execute(sa.select(deliveries).where(
                deliveries.c.alert_id.in_(ids))).mappings().all() if ids else []
        by_alert: dict[str, list[dict[str, Any]]] = {}
        for d in sent:
            by_alert.setdefault(d["alert_id"], []).append({
                "url": d["url"], "status": d["status"], "attempts": d["attempts"],
                "sent_at": as_utc(d["sent_at"]), "last_error": d["last_error"]})
        for row in rows:
            row["created_at"] = as_utc(row["created_at"])
            row["deliveries"] = by_alert.get(row["id"], [])
        return rows

    def latest(self, model_name: str, kinds: tuple[str, ...]) -> dict[str, Any] | None:
        """The newest alert of one of ``kinds`` for a model, or None."""
        query = (sa.select(alerts).where(alerts.c.model_name == model_name,
                                         alerts.c.kind.in_(kinds))
                 .order_by(alerts.c.created_at.desc()).limit(1))
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else {**row, "created_at": as_utc(row["created_at"])}

