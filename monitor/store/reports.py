"""Report storage and the scheduler's lease: the SQL for monitoring lives here."""

from __future__ import annotations

import gzip
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from monitor.report import MonitoringReport
from monitor.store.records import as_utc, json_safe
from monitor.store.schema import leases, report_pages, reports

SUMMARY_COLUMNS = [c for c in reports.columns if c.name not in ("summary", "snapshot")]


def as_row(mapping: Any) -> dict[str, Any]:
    """A result row as a dict, with its timestamps as aware UTC datetimes."""
    row = dict(mapping)
    for key in ("created_at", "window_start", "window_end"):
        if key in row:
            row[key] = as_utc(row[key])
    return row


class ReportRepository:
    """Saves, lists and reads monitoring reports; holds named leases."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def has_report(self, model_name: str, model_version: str, window_end: datetime) -> bool:
        """Whether this model version's window ending at ``window_end`` was reported."""
        query = sa.select(sa.func.count()).select_from(reports).where(
            reports.c.model_name == model_name, reports.c.model_version == model_version,
            reports.c.window_end == window_end)
        with self.engine.connect() as connection:
            return bool(connection.execute(query).scalar_one())

    def save(self, report: MonitoringReport, now: datetime | None = None) -> str | None:
        """Store a report and its page, made at ``now`` (the job's clock, so a report on
        simulated time is stamped on it); None when the window was already reported."""
        s = report.summary
        report_id = uuid.uuid4().hex
        embedding = s.embedding_drift or {}
        row = dict(
            id=report_id, created_at=now or datetime.now(UTC), model_name=s.model_name,
            model_version=s.model_version, window_start=s.window_start, window_end=s.window_end,
            rows=s.rows, labeled_rows=s.labeled_rows, verdict=s.verdict,
            drift_share=s.drift_share, embedding_statistic=embedding.get("statistic"),
            embedding_p_value=embedding.get("p_value"),
            estimated_accuracy=s.estimated_accuracy, realized_accuracy=s.realized_accuracy,
            macro_f1=s.macro_f1, summary=json_safe(s.to_dict()), snapshot=report.snapshot_json,
            estimated_accuracy_low=s.estimated_accuracy_low,
            estimated_accuracy_high=s.estimated_accuracy_high, estimate_method=s.estimate_method,
            realized_accuracy_low=s.realized_accuracy_low,
            realized_accuracy_high=s.realized_accuracy_high, realized_method=s.realized_method,
            accuracy_risk=s.accuracy_risk, estimable=s.estimable,
            labels_needed=s.labels_needed)
        try:
            with self.engine.begin() as connection:
                connection.execute(reports.insert(), row)
                connection.execute(report_pages.insert(), {
                    "report_id": report_id, "html_gzip": gzip.compress(report.html.encode())})
        except IntegrityError:
            return None
        return report_id

    def list(
        self, *, model_name: str | None = None, model_version: str | None = None,
        since: datetime | None = None, until: datetime | None = None,
        limit: int = 50, offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """Report summaries, newest window first, and how many match in all."""
        conditions = []
        if model_name is not None:
            conditions.append(reports.c.model_name == model_name)
        if model_version is not None:
            conditions.append(reports.c.model_version == model_version)
        if since is not None:
            conditions.append(reports.c.window_end >= since)
        if until is not None:
            conditions.append(reports.c.window_end < until)
        query = (sa.select(*SUMMARY_COLUMNS).where(*conditions)
                 .order_by(reports.c.window_end.desc(), reports.c.id).limit(limit).offset(offset))
        total = sa.select(sa.func.count()).select_from(reports).where(*conditions)
        with self.engine.connect() as connection:
            rows = [as_row(r) for r in connection.execute(query).mappings()]
            return rows, int(connection.execute(total).scalar_one())

    def source_statuses(self, model_name: str, limit: int = 24
                        ) -> list[tuple[datetime, dict[str, dict[str, Any]]]]:
        """For the newest ``limit`` reports of a model, newest first: the window's end and
        each source's status and drifted columns there (reports without sources omitted)."""
        query = (sa.select(reports.c.window_end, reports.c.summary)
                 .where(reports.c.model_name == model_name)
                 .order_by(reports.c.window_end.desc()).limit(limit))
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [(as_utc(end), {s: {"status": r.get("status"),
                                   "drifted_columns": r.get("drifted_columns", [])}
                               for s, r in ((summary or {}).get("source_drift") or {}).items()})
                for end, summary in rows if (summary or {}).get("source_drift")]

    def get(self, report_id: str) -> dict[str, Any] | None:
        """One report with its full summary (no snapshot, no page)."""
        query = sa.select(*SUMMARY_COLUMNS, reports.c.summary).where(reports.c.id == report_id)
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else as_row(row)

    def first_window_start(self, report_ids: list[str]) -> datetime | None:
        """Start of the earliest window among these reports (None: none of them is stored),
        e.g. when the drift that triggered a retrain began."""
        if not report_ids:
            return None
        query = sa.select(sa.func.min(reports.c.window_start)).where(
            reports.c.id.in_(report_ids))
        with self.engine.connect() as connection:
            return as_utc(connection.execute(query).scalar_one_or_none())

    def html(self, report_id: str) -> str | None:
        """The report's HTML page."""
        query = sa.select(report_pages.c.html_gzip).where(report_pages.c.report_id == report_id)
        with self.engine.connect() as connection:
            data = connection.execute(query).scalar_one_or_none()
        return None if data is None else gzip.decompress(data).decode()

    def latest_per_version(self, since: datetime, limit: int = 50) -> list[dict[str, Any]]:
        """The newest report of each model version with a window ending after ``since``
        (at most ``limit`` versions, newest first), summaries included."""
        newest = (sa.select(reports.c.model_name, reports.c.model_version,
                            sa.func.max(reports.c.window_end).label("window_end"))
                  .where(reports.c.window_end >= since)
                  .group_by(reports.c.model_name, reports.c.model_version).subquery())
        query = (sa.select(*SUMMARY_COLUMNS, reports.c.summary)
                 .join(newest, sa.and_(reports.c.model_name == newest.c.model_name,
                                       reports.c.model_version == newest.c.model_version,
                                       reports.c.window_end == newest.c.window_end))
                 .order_by(reports.c.window_end.desc()).limit(limit))
        with self.engine.connect() as connection:
            return [as_row(r) for r in connection.execute(query).mappings()]

    def timeline(self, model_name: str | None = None, since: datetime | None = None,
                 limit: int = 1000) -> list[dict[str, Any]]:
        """Drift scores and accuracies in window order, for charts."""
        columns = [reports.c[n] for n in (
            "id", "model_name", "model_version", "window_end", "rows", "labeled_rows", "verdict",
            "drift_share", "embedding_p_value", "estimated_accuracy", "estimated_accuracy_low",
            "estimated_accuracy_high", "estimate_method", "realized_accuracy",
            "realized_accuracy_low", "realized_accuracy_high", "realized_method", "macro_f1",
            "accuracy_risk", "estimable", "labels_needed")]
        query = sa.select(*columns)
        if model_name is not None:
            query = query.where(reports.c.model_name == model_name)
        if since is not None:
            query = query.where(reports.c.window_end >= since)
        query = query.order_by(reports.c.window_end.desc()).limit(limit)
        with self.engine.connect() as connection:
            return [as_row(r) for r in connection.execute(query).mappings()][::-1]

    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``ttl_s`` seconds; False if another holds it."""
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=ttl_s)
        with self.engine.begin() as connection:
            taken = connection.execute(
                leases.update()
                .where(leases.c.name == name,
                       sa.or_(leases.c.holder == holder, leases.c.expires_at < now))
                .values(holder=holder, expires_at=expires)).rowcount
        if taken:
            return True
        try:
            with self.engine.begin() as connection:
                connection.execute(leases.insert(), {"name": name, "holder": holder,
                                                     "expires_at": expires})
        except IntegrityError:
            return False
        return True

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up if ``holder`` has it."""
        with self.engine.begin() as connection:
            connection.execute(leases.delete().where(leases.c.name == name,
                                                     leases.c.holder == holder))
