"""The repository: every SQL statement vidmon runs against the store lives here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite

from monitor.store.records import FeedbackResult, PredictionRecord, Source
from monitor.store.schema import predictions

_CHUNK = 500


class PredictionRepository:
    """Reads and writes predictions, reference rows and late labels."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))

    def _insert_ignoring_duplicates(self) -> sa.Insert:
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            return postgresql.insert(predictions).on_conflict_do_nothing(index_elements=["id"])
        if dialect == "sqlite":
            return sqlite.insert(predictions).on_conflict_do_nothing(index_elements=["id"])
        raise ValueError(f"the store supports SQLite and PostgreSQL, not {dialect}")

    def add_predictions(self, records: Sequence[PredictionRecord]) -> int:
        """Insert records in one transaction; ids already stored are skipped, so replaying a
        batch writes each record exactly once. Returns how many rows were new."""
        if not records:
            return 0
        statement = self._insert_ignoring_duplicates()
        inserted = 0
        with self.engine.begin() as connection:
            for start in range(0, len(records), _CHUNK):
                rows = [r.to_row() for r in records[start : start + _CHUNK]]
                ids = [row["id"] for row in rows]
                before = connection.execute(
                    sa.select(sa.func.count()).where(predictions.c.id.in_(ids))).scalar_one()
                connection.execute(statement, rows)
                inserted += len(rows) - before
        return inserted

    def apply_feedback(self, labels: Mapping[str, str]) -> FeedbackResult:
        """Store true labels for known prediction ids; idempotent. Unknown ids are reported."""
        ids = list(labels)
        with self.engine.begin() as connection:
            known = set(connection.execute(
                sa.select(predictions.c.id).where(predictions.c.id.in_(ids))).scalars())
            now = datetime.now(UTC)
            for prediction_id in (i for i in ids if i in known):
                connection.execute(
                    predictions.update()
                    .where(predictions.c.id == prediction_id)
                    .values(true_label=labels[prediction_id], labeled_at=now))
        return FeedbackResult(stored=[i for i in ids if i in known],
                              unknown_ids=[i for i in ids if i not in known])

    def count(self, source: Source | None = None, model_version: str | None = None) -> int:
        """Rows in the predictions table, optionally of one source and model version."""
        query = sa.select(sa.func.count()).select_from(predictions)
        if source is not None:
            query = query.where(predictions.c.source == source)
        if model_version is not None:
            query = query.where(predictions.c.model_version == model_version)
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def get(self, prediction_ids: Iterable[str]) -> dict[str, dict]:
        """Rows by id, as dicts of column values."""
        ids = list(prediction_ids)
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(predictions).where(predictions.c.id.in_(ids))).mappings()
            return {row["id"]: dict(row) for row in rows}
