"""The SQL of retention: which rows have expired, deleting them in small batches, releasing
clips, and pruning old report pages. Every statement touches at most ``limit`` rows, so no
transaction holds locks long enough to stall the prediction writer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Engine

from monitor.store.records import as_utc
from monitor.store.schema import pending_labels, predictions, report_pages, reports
from monitor.store.schema import retrain_decisions as decisions

_CHUNK = 500


@dataclass(frozen=True)
class Protected:
    """Labeled production rows of ``model_name`` made since ``since`` (None: all of them),
    with their clips: the training data of a retrain that has not run yet."""

    model_name: str
    since: datetime | None


@dataclass(frozen=True)
class Expiry:
    """Which production rows of one model version may go: older than ``before`` (which the
    caller keeps at or before the end of the newest report on the version), labeled ones
    older than ``labeled_before`` too (None: labeled rows stay)."""

    model_name: str
    model_version: str
    before: datetime
    labeled_before: datetime | None
    protected: tuple[Protected, ...] = ()


def _unprotected(protected: Sequence[Protected]) -> list[sa.ColumnElement[bool]]:
    conditions = []
    for p in protected:
        needed = [predictions.c.model_name == p.model_name, predictions.c.true_label.is_not(None)]
        if p.since is not None:
            needed.append(predictions.c.created_at >= p.since)
        conditions.append(sa.not_(sa.and_(*needed)))
    return conditions


def _expired(expiry: Expiry) -> list[sa.ColumnElement[bool]]:
    # The first four match ix_predictions_window, so each batch is an index range scan.
    labeled = (predictions.c.true_label.is_(None) if expiry.labeled_before is None else
               sa.or_(predictions.c.true_label.is_(None),
                      predictions.c.created_at < expiry.labeled_before))
    return [predictions.c.model_name == expiry.model_name,
            predictions.c.model_version == expiry.model_version,
            predictions.c.source == "production",
            predictions.c.created_at < expiry.before, labeled,
            *_unprotected(expiry.protected)]


class RetentionRepository:
    """Finds and removes what the retention settings let go."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def reported_until(self) -> dict[tuple[str, str], datetime]:
        """End of the newest report window of each (model name, version): rows before it
        have been summarised by a report."""
        query = sa.select(reports.c.model_name, reports.c.model_version,
                          sa.func.max(reports.c.window_end)).group_by(
            reports.c.model_name, reports.c.model_version)
        with self.engine.connect() as connection:
            return {(name, version): as_utc(end) for name, version, end in
                    connection.execute(query)}

    def unreported_versions(self, before: datetime) -> dict[tuple[str, str], int]:
        """Production rows older than ``before`` of versions no report covers at all."""
        reported = sa.select(reports.c.id).where(
            reports.c.model_name == predictions.c.model_name,
            reports.c.model_version == predictions.c.model_version).exists()
        query = (sa.select(predictions.c.model_name, predictions.c.model_version,
                           sa.func.count())
                 .where(predictions.c.source == "production", predictions.c.created_at < before,
                        ~reported)
                 .group_by(predictions.c.model_name, predictions.c.model_version))
        with self.engine.connect() as connection:
            return {(name, version): int(n) for name, version, n in connection.execute(query)}

    def active_retrains(self, max_attempts: int) -> list[tuple[str, list[str]]]:
        """(model name, report ids) of every retrain decision that may still run."""
        query = sa.select(decisions.c.model_name, decisions.c.report_ids).where(
            decisions.c.triggered.is_(True),
            sa.or_(decisions.c.status.in_(("pending", "running")),
                   sa.and_(decisions.c.status == "failed",
                           decisions.c.attempts < max_attempts)))
        with self.engine.connect() as connection:
            return [(name, list(ids or [])) for name, ids in connection.execute(query)]

    def count_expired(self, expiry: Expiry) -> int:
        """Rows :meth:`delete_expired` would delete in all."""
        query = sa.select(sa.func.count()).select_from(predictions).where(*_expired(expiry))
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def delete_expired(self, expiry: Expiry, limit: int) -> list[str | None]:
        """Delete up to ``limit`` expired rows in one transaction; their clip paths."""
        chosen = sa.select(predictions.c.id).where(*_expired(expiry)).limit(limit)
        statement = (predictions.delete().where(predictions.c.id.in_(chosen.scalar_subquery()))
                     .returning(predictions.c.clip_path))
        with self.engine.begin() as connection:
            return [row[0] for row in connection.execute(statement)]

    def release_clips(self, limit: int, before: datetime | None,
                      protected: Sequence[Protected]) -> list[str]:
        """Forget the clips of up to ``limit`` production rows, oldest first (those made
        before ``before`` only, when given): their ``clip_path`` becomes NULL. Returns the
        paths released, whose files may now be unreferenced."""
        conditions = [predictions.c.clip_path.is_not(None), predictions.c.source == "production",
                      *_unprotected(protected)]
        if before is not None:
            conditions.append(predictions.c.created_at < before)
        chosen = (sa.select(predictions.c.id, predictions.c.clip_path).where(*conditions)
                  .order_by(predictions.c.created_at).limit(limit))
        with self.engine.begin() as connection:
            rows = connection.execute(chosen).all()
            if rows:
                connection.execute(predictions.update()
                                   .where(predictions.c.id.in_([r[0] for r in rows]))
                                   .values(clip_path=None))
        return [r[1] for r in rows]

    def referenced(self, paths: Sequence[str]) -> set[str]:
        """Which of ``paths`` some row still refers to."""
        found: set[str] = set()
        with self.engine.connect() as connection:
            for start in range(0, len(paths), _CHUNK):
                chunk = list(paths[start:start + _CHUNK])
                found.update(connection.execute(
                    sa.select(predictions.c.clip_path).distinct()
                    .where(predictions.c.clip_path.in_(chunk))).scalars())
        return found

    def _cited_reports(self) -> list[str]:
        """Reports a retrain decision names (its lineage): they stay whole."""
        with self.engine.connect() as connection:
            lists = connection.execute(sa.select(decisions.c.report_ids).where(
                decisions.c.triggered.is_(True))).scalars()
            return sorted({report_id for ids in lists for report_id in ids or []})

    def _prunable(self, before: datetime) -> sa.Select:
        cited = self._cited_reports()
        query = sa.select(reports.c.id).where(reports.c.created_at < before,
                                              reports.c.snapshot != "")
        return query.where(reports.c.id.not_in(cited)) if cited else query

    def count_prunable_reports(self, before: datetime) -> int:
        """Reports :meth:`prune_reports` would prune in all."""
        query = sa.select(sa.func.count()).select_from(self._prunable(before).subquery())
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def prune_reports(self, before: datetime, limit: int) -> int:
        """Drop the Evidently snapshot and page of up to ``limit`` reports made before
        ``before`` that no retrain decision cites; their summary row stays. Returns how
        many were pruned."""
        with self.engine.begin() as connection:
            ids = list(connection.execute(self._prunable(before).limit(limit)).scalars())
            if ids:
                connection.execute(reports.update().where(reports.c.id.in_(ids))
                                   .values(snapshot=""))
                connection.execute(report_pages.delete().where(
                    report_pages.c.report_id.in_(ids)))
        return len(ids)

    def delete_pending_labels(self, before: datetime) -> int:
        """Forget labels that waited since before ``before`` for a row that never came."""
        with self.engine.begin() as connection:
            return connection.execute(pending_labels.delete().where(
                pending_labels.c.labeled_at < before)).rowcount
