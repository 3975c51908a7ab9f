"""The repository: every SQL statement vidmon runs against the store lives here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from monitor.features import FEATURE_NAMES, PIXEL_FEATURES
from monitor.store.records import (
    FeedbackResult,
    LabeledClip,
    PredictionRecord,
    Source,
    Window,
    WindowPopulation,
    as_utc,
    decode_embedding,
    is_issued_id,
)
from monitor.store.engine import insert_ignoring_duplicates
from monitor.store.schema import pending_labels, predictions, reference_profiles

_CHUNK = 500
WINDOW_COLUMNS: tuple[str, ...] = (
    "id", "created_at", "predicted_label", "confidence", "entropy", "probabilities",
    *FEATURE_NAMES, "true_label", "labeled_at", "clip_path", "queue_p_wrong",
    "queue_inclusion", "queue_selected", "video_id", "source_id",
)


def _stack_embeddings(blobs: list[tuple[bytes, str]]) -> np.ndarray:
    """(n, d) float32 from stored embedding bytes; one buffer read when all are float32."""
    if not blobs:
        return np.zeros((0, 0), dtype=np.float32)
    if all(dtype == "float32" for _, dtype in blobs):
        return np.frombuffer(b"".join(data for data, _ in blobs), dtype="<f4").reshape(
            len(blobs), -1).copy()
    return np.stack([decode_embedding(data, dtype) for data, dtype in blobs])


_NEWEST = (predictions.c.created_at.desc(), predictions.c.id.desc())
_LABEL_COLUMNS = ("predicted_label", "true_label", "queue_p_wrong", "queue_inclusion",
                  "queue_selected")


def _counts_query(conditions: list[sa.ColumnElement[bool]]) -> sa.Select:
    """Rows per predicted class of a window."""
    return (sa.select(predictions.c.predicted_label, sa.func.count())
            .where(*conditions).group_by(predictions.c.predicted_label))


def _labels_query(conditions: list[sa.ColumnElement[bool]]) -> sa.Select:
    """A window's rows that carry a label or that the labeling queue considered."""
    return sa.select(*[predictions.c[c] for c in _LABEL_COLUMNS]).where(
        *conditions, sa.or_(predictions.c.true_label.is_not(None),
                            predictions.c.queue_inclusion.is_not(None)))


def _sample_query(query: sa.Select, conditions: list[sa.ColumnElement[bool]],
                  sample: int) -> sa.Select:
    """``sample`` rows of a window chosen uniformly at random: ids are random, so the
    smallest ids are a uniform sample, the same one each time it is drawn. The ids are
    chosen first (a top-N sort of ids alone) and only those rows are read whole: sorting
    whole rows with their embeddings spilled 70 MB to disk on PostgreSQL at 100k rows."""
    chosen = (sa.select(predictions.c.id).where(*conditions).order_by(predictions.c.id)
              .limit(sample))
    return query.where(predictions.c.id.in_(chosen.scalar_subquery()))


class PredictionRepository:
    """Reads and writes predictions, reference rows and late labels."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # The statements of every flush of the prediction log, built once: building them
        # per flush was most of a one-row flush's time.
        self._insert_fresh = insert_ignoring_duplicates(engine, predictions, ["id"])
        self._insert_predictions = self._insert_fresh.returning(predictions.c.id)
        self._waiting_labels = sa.select(pending_labels).where(
            pending_labels.c.id.in_(sa.bindparam("keys", expanding=True)))

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))

    def _upsert_pending(self) -> sa.Insert:
        """Insert a waiting label; a later label for the same id replaces an earlier one (as
        on a stored row), even when two requests race on it."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(pending_labels)
        return statement.on_conflict_do_update(
            index_elements=["id"],
            set_={"label": statement.excluded.label,
                  "labeled_at": statement.excluded.labeled_at},
            where=pending_labels.c.labeled_at <= statement.excluded.labeled_at)

    def add_predictions(self, records: Sequence[PredictionRecord]) -> int:
        """Insert records in one transaction; ids already stored are skipped, so replaying a
        batch writes each record exactly once. Labels that arrived before their rows are
        applied in the same transaction. Returns how many rows were new."""
        if not records:
            return 0
        with self.engine.begin() as connection:
            return self._insert(connection, records)

    def add_fresh_predictions(self, records: Sequence[PredictionRecord]) -> None:
        """Insert records just predicted, in one transaction: the prediction log's flush.
        Unlike :meth:`add_predictions` it looks for no waiting labels, since no client can
        label an id before its answer, which goes out only once this commit returns, and it
        counts nothing (no RETURNING): a flush of 3 rows took 0.53 -> 0.36 ms on SQLite and
        1.4 -> 0.8 ms on PostgreSQL. A record that reaches the store another way (a spool's
        replay) goes through :meth:`add_predictions`."""
        if not records:
            return
        with self.engine.begin() as connection:
            for start in range(0, len(records), _CHUNK):
                connection.execute(self._insert_fresh,
                                   [r.to_row() for r in records[start : start + _CHUNK]])

    def _insert(self, connection: Connection, records: Sequence[PredictionRecord]) -> int:
        inserted = 0
        for start in range(0, len(records), _CHUNK):
            chunk = records[start : start + _CHUNK]
            rows = [r.to_row() for r in chunk]
            # Rows already stored are skipped by the conflict clause and return no id.
            inserted += len(connection.execute(self._insert_predictions, rows).all())
            keys = {row["id"] for row in rows} | {r.video_id for r in chunk if r.video_id}
            waiting = connection.execute(self._waiting_labels,
                                         {"keys": list(keys)}).mappings().all()
            self._label(connection, {w["id"]: (w["label"], w["labeled_at"]) for w in waiting})
        return inserted

    @staticmethod
    def _label(connection: Connection, labels: Mapping[str, tuple[str, datetime]]) -> None:
        """Set true labels on rows by prediction or video id, unless the row holds a label
        given later (a label replayed from a spool must not undo a newer one); drop them
        from the waiting list, but not a newer waiting label: one that a concurrent
        feedback request upserted while this transaction ran stays, and
        :meth:`resolve_pending_labels` applies it (deleting every waiting label of these
        ids lost such an acknowledged label on PostgreSQL)."""
        if not labels:
            return
        # One statement each, executed for every label at once (psycopg pipelines them:
        # a spool's thousand labels are not a thousand round trips to a distant store).
        rows = [{"key": key, "new_label": label, "at": at}
                for key, (label, at) in labels.items()]
        key, at = sa.bindparam("key"), sa.bindparam("at")
        connection.execute(
            predictions.update()
            .where(sa.or_(predictions.c.id == key, predictions.c.video_id == key),
                   sa.or_(predictions.c.labeled_at.is_(None), predictions.c.labeled_at <= at))
            .values(true_label=sa.bindparam("new_label"), labeled_at=at), rows)
        connection.execute(pending_labels.delete().where(
            pending_labels.c.id == key, pending_labels.c.labeled_at <= at), rows)

    def _known(self, connection: Connection, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are stored, as a prediction's or a video's id."""
        known: set[str] = set()
        wanted = set(ids)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            rows = connection.execute(sa.select(predictions.c.id, predictions.c.video_id)
                                      .where(sa.or_(predictions.c.id.in_(chunk),
                                                    predictions.c.video_id.in_(chunk))))
            known.update(i for row in rows for i in row if i in wanted)
        return known

    def apply_feedback(self, labels: Mapping[str, str], now: datetime | None = None
                       ) -> FeedbackResult:
        """Store true labels labeled at ``now``, idempotently, in one transaction. An id is a
        prediction's or a video's (labeling every clip of it). A label for an id vidmon
        issued whose row is not stored yet (still in a replica's spool) waits in
        ``pending_labels`` and is applied when the row lands; ids vidmon never issued are
        reported unknown."""
        ids = list(labels)
        now = now or datetime.now(UTC)
        known, waiting = self._store_labels({i: (labels[i], now) for i in ids})
        return FeedbackResult(stored=[i for i in ids if i in known],
                              unknown_ids=[i for i in ids if i not in known
                                           and not is_issued_id(i)],
                              pending_ids=waiting)

    def replay_feedback(self, entries: Sequence[tuple[Mapping[str, str], datetime]]) -> None:
        """Store spooled feedback requests (labels and when each was given) in one
        transaction, as applying them one after another would: the label given last
        (latest ``labeled_at``, the later entry on a tie) of each id wins."""
        merged: dict[str, tuple[str, datetime]] = {}
        for labels, labeled_at in entries:
            for key, label in labels.items():
                if key not in merged or labeled_at >= merged[key][1]:
                    merged[key] = (label, labeled_at)
        self._store_labels(merged)

    def _store_labels(self, labels: Mapping[str, tuple[str, datetime]]
                      ) -> tuple[set[str], list[str]]:
        """In one transaction: label the stored rows, keep labels of issued ids whose row
        has not landed waiting; the stored ids and the waiting ones."""
        ids = list(labels)
        with self.engine.begin() as connection:
            known = self._known(connection, ids)
            self._label(connection, {i: labels[i] for i in ids if i in known})
            waiting = [i for i in ids if i not in known and is_issued_id(i)]
            if waiting:
                connection.execute(self._upsert_pending(), [
                    {"id": i, "label": labels[i][0], "labeled_at": labels[i][1]}
                    for i in waiting])
        return known, waiting

    def resolve_pending_labels(self) -> int:
        """Apply waiting labels whose rows have landed since (a row and its label committed
        at the same moment can miss each other); returns how many were applied."""
        with self.engine.begin() as connection:
            waiting = {row["id"]: (row["label"], row["labeled_at"]) for row in
                       connection.execute(sa.select(pending_labels).limit(10_000)).mappings()}
            if not waiting:
                return 0
            landed = self._known(connection, list(waiting))
            self._label(connection, {i: waiting[i] for i in landed})
        return len(landed)

    def pending_label_count(self) -> int:
        """Labels waiting for their prediction's row."""
        with self.engine.connect() as connection:
            return int(connection.execute(
                sa.select(sa.func.count()).select_from(pending_labels)).scalar_one())

    def add_reference(self, records: Sequence[PredictionRecord], model_name: str,
                      model_version: str, now: datetime | None = None) -> int:
        """Store a version's reference rows exactly once: the ``reference_profiles`` row is
        the claim, in the same transaction, so a second writer (another monitor racing this
        one) fails on the key and adds nothing. Returns the rows added (0: already there)."""
        try:
            with self.engine.begin() as connection:
                connection.execute(reference_profiles.insert(), {
                    "model_name": model_name, "model_version": model_version,
                    "rows": len(records), "stored_at": now or datetime.now(UTC)})
                return self._insert(connection, records)
        except IntegrityError:
            return 0

    def has_reference(self, model_name: str, model_version: str) -> bool:
        """Whether the reference profile of this version is stored."""
        with self.engine.connect() as connection:
            return connection.execute(sa.select(reference_profiles.c.rows).where(
                reference_profiles.c.model_name == model_name,
                reference_profiles.c.model_version == model_version)).first() is not None

    def count(self, source: Source | None = None, model_version: str | None = None,
              model_name: str | None = None) -> int:
        """Rows in the predictions table, optionally of one source, model and version."""
        query = sa.select(sa.func.count()).select_from(predictions)
        if source is not None:
            query = query.where(predictions.c.source == source)
        if model_version is not None:
            query = query.where(predictions.c.model_version == model_version)
        if model_name is not None:
            query = query.where(predictions.c.model_name == model_name)
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def last_created_at(self, source: Source | None = None) -> datetime | None:
        """Time of the newest row in the store, optionally of one source (None: none)."""
        query = sa.select(sa.func.max(predictions.c.created_at))
        if source is not None:
            query = query.where(predictions.c.source == source)
        with self.engine.connect() as connection:
            return as_utc(connection.execute(query).scalar_one_or_none())

    def label_lags(self, model_name: str, since: datetime, limit: int = 2000) -> list[float]:
        """Seconds from prediction to label for the newest ``limit`` labeled production
        predictions of a model made since ``since``."""
        query = (sa.select(predictions.c.created_at, predictions.c.labeled_at)
                 .where(predictions.c.model_name == model_name,
                        predictions.c.source == "production",
                        predictions.c.labeled_at.is_not(None),
                        predictions.c.created_at >= since)
                 .order_by(predictions.c.created_at.desc()).limit(limit))
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [(as_utc(labeled) - as_utc(created)).total_seconds() for created, labeled in rows]

    def hourly_volume(self, since: datetime | None = None, limit: int = 168
                      ) -> list[dict[str, Any]]:
        """Production predictions per hour and model version, newest ``limit`` hours,
        oldest first."""
        created = predictions.c.created_at
        if self.engine.dialect.name == "postgresql":
            hour = sa.func.to_char(sa.func.date_trunc("hour", created), 'YYYY-MM-DD"T"HH24:00:00')
        else:
            hour = sa.func.strftime("%Y-%m-%dT%H:00:00", created)
        query = sa.select(hour.label("hour"), predictions.c.model_version,
                          sa.func.count().label("predictions")).where(
            predictions.c.source == "production")
        if since is not None:
            query = query.where(created >= since)
        query = (query.group_by(hour, predictions.c.model_version)
                 .order_by(hour.desc()).limit(limit))
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [{"hour": f"{r['hour']}Z", "model_version": r["model_version"],
                 "predictions": int(r["predictions"])} for r in rows][::-1]

    def latest_model(self, until: datetime | None = None) -> tuple[str, str] | None:
        """(name, version) of the newest production prediction before ``until``: the model
        that is serving."""
        query = sa.select(predictions.c.model_name, predictions.c.model_version).where(
            predictions.c.source == "production")
        if until is not None:
            query = query.where(predictions.c.created_at < until)
        query = query.order_by(predictions.c.created_at.desc()).limit(1)
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else (row[0], row[1])

    @staticmethod
    def _window_conditions(model_name: str, model_version: str, source: Source,
                           since: datetime | None, until: datetime | None,
                           where: list[sa.ColumnElement[bool]] | None
                           ) -> list[sa.ColumnElement[bool]]:
        conditions = [predictions.c.model_name == model_name,
                      predictions.c.model_version == model_version,
                      predictions.c.source == source,
                      # a long video's clips beyond its sample stay out of its reports
                      predictions.c.in_reports.is_not(False)]
        if since is not None:
            conditions.append(predictions.c.created_at >= since)
        if until is not None:
            conditions.append(predictions.c.created_at < until)
        return conditions + (where or [])

    def source_history(self, model_name: str, sources: Sequence[str], *, since: datetime,
                       until: datetime, per_source: int) -> pd.DataFrame:
        """At most ``per_source`` production rows of each of ``sources`` drawn at random
        from [since, until), any version of the model: their ``source_id`` and image-quality
        columns (the baseline each source's drift test compares against). At random, not
        the newest: a busy camera's newest 500 rows are its last hour or two, and a change
        would stop being news within the hour; drawn over the whole span it is news until
        it fills about half of it."""
        columns = ["source_id", *PIXEL_FEATURES]
        if not sources:
            return pd.DataFrame(columns=columns)
        rank = sa.func.row_number().over(partition_by=predictions.c.source_id,
                                         order_by=sa.func.random())
        ranked = (sa.select(*[predictions.c[c] for c in columns], rank.label("rank"))
                  .where(predictions.c.model_name == model_name,
                         predictions.c.source == "production",
                         predictions.c.source_id.in_(list(sources)),
                         predictions.c.created_at >= since, predictions.c.created_at < until)
                  .subquery())
        query = sa.select(*[ranked.c[c] for c in columns]).where(ranked.c.rank <= per_source)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return pd.DataFrame([tuple(r) for r in rows], columns=columns).astype(
            {c: float for c in PIXEL_FEATURES})

    def load_window(
        self,
        model_name: str,
        model_version: str,
        source: Source = "production",
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        last: int | None = None,
        where: list[sa.ColumnElement[bool]] | None = None,
        sample: int | None = None,
    ) -> Window:
        """Rows of one model version and source in time order: those in [since, until)
        (and matching ``where``), of those only the newest ``last`` when given. References
        load the same way. A window of more than ``sample`` rows comes as a uniform random
        sample of that many, drawn by the database (the rows with the smallest ids, which
        are random), with the whole window's counts and labels beside it."""
        conditions = self._window_conditions(model_name, model_version, source, since, until,
                                             where)
        query = sa.select(*[predictions.c[name] for name in WINDOW_COLUMNS],
                          predictions.c.embedding, predictions.c.embedding_dtype)
        population = None
        if sample is not None:
            if last is not None:
                conditions = [predictions.c.id.in_(sa.select(predictions.c.id).where(
                    *conditions).order_by(*_NEWEST).limit(last).scalar_subquery())]
            population = self._population(conditions)
            if population.rows <= sample:
                population = None
        if population is not None:
            query = _sample_query(query, conditions, sample)
        else:
            query = query.where(*conditions).order_by(*_NEWEST)
            if last is not None and sample is None:
                query = query.limit(last)
        with self.engine.connect() as connection:
            rows = sorted(connection.execute(query).all(), key=lambda r: (r[1], r[0]))
        frame = pd.DataFrame([row[:-2] for row in rows], columns=list(WINDOW_COLUMNS))
        return Window(frame, _stack_embeddings([(row[-2], row[-1]) for row in rows]),
                      population)

    def _population(self, conditions: list[sa.ColumnElement[bool]]) -> WindowPopulation:
        """A window's size and class counts (one GROUP BY) and its labeled or
        queue-considered rows' light columns."""
        with self.engine.connect() as connection:
            class_counts = {label: int(n) for label, n in
                            connection.execute(_counts_query(conditions))}
            frame = pd.DataFrame(connection.execute(_labels_query(conditions)).all(),
                                 columns=list(_LABEL_COLUMNS))
        return WindowPopulation(sum(class_counts.values()), class_counts, frame)

    def explain_window(self, model_name: str, model_version: str, since: datetime,
                       until: datetime, sample: int) -> dict[str, str]:
        """The database's plans (PostgreSQL: EXPLAIN ANALYZE, run) for a sampled window's
        three queries: class counts, labeled rows, the sample."""
        conditions = self._window_conditions(model_name, model_version, "production", since,
                                             until, None)
        statements = {"counts": _counts_query(conditions), "labels": _labels_query(conditions),
                      "sample": _sample_query(sa.select(
                          *[predictions.c[name] for name in WINDOW_COLUMNS],
                          predictions.c.embedding), conditions, sample)}
        postgres = self.engine.dialect.name == "postgresql"
        prefix = "EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN "
        plans = {}
        with self.engine.connect() as connection:
            for name, statement in statements.items():
                compiled = statement.compile(self.engine, compile_kwargs={"literal_binds": True})
                rows = connection.exec_driver_sql(prefix + str(compiled)).all()
                plans[name] = "\n".join(str(row[0] if postgres else row[-1]) for row in rows)
        return plans

    def labeled_clips(self, model_name: str, since: datetime | None = None,
                      until: datetime | None = None, limit: int | None = None
                      ) -> list[LabeledClip]:
        """Labeled production predictions in [since, until) whose clip was kept, oldest
        first; the newest ``limit`` when given."""
        chosen = sa.case((predictions.c.queue_selected.is_(True), predictions.c.queue_inclusion),
                         else_=None)
        query = sa.select(predictions.c.id, predictions.c.clip_path, predictions.c.true_label,
                          predictions.c.created_at, chosen, predictions.c.video_id,
                          *[predictions.c[name] for name in FEATURE_NAMES]).where(
            predictions.c.model_name == model_name, predictions.c.source == "production",
            predictions.c.true_label.is_not(None), predictions.c.clip_path.is_not(None))
        if since is not None:
            query = query.where(predictions.c.created_at >= since)
        if until is not None:
            query = query.where(predictions.c.created_at < until)
        query = query.order_by(predictions.c.created_at.desc())
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()[::-1]
        return [LabeledClip(row[0], row[1], row[2], as_utc(row[3]),
                            dict(zip(FEATURE_NAMES, row[6:])), row[4], row[5]) for row in rows]

    def get(self, prediction_ids: Iterable[str]) -> dict[str, dict]:
        """Rows by id, as dicts of column values."""
        ids = list(prediction_ids)
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(predictions).where(predictions.c.id.in_(ids))).mappings()
            return {row["id"]: dict(row) for row in rows}
