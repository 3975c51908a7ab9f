"""The store on a real SQLite file and on the machine's PostgreSQL."""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa

from monitor.store import upgrade_database
from monitor.store.records import decode_embedding, encode_embedding
from monitor.store.schema import metadata
from tests.factories import make_record


def test_migrations_build_the_schema_the_repository_queries(repository) -> None:
    inspector = sa.inspect(repository.engine)
    assert set(metadata.tables) <= set(inspector.get_table_names())
    for table in metadata.tables.values():
        migrated = {c["name"]: c for c in inspector.get_columns(table.name)}
        assert set(migrated) == {c.name for c in table.columns}, table.name
        for column in table.columns:
            assert migrated[column.name]["nullable"] == column.nullable, (table.name, column.name)
    assert "ix_predictions_window" in {i["name"] for i in inspector.get_indexes("predictions")}
    assert "apscheduler_jobs" in inspector.get_table_names()
    upgrade_database(repository.engine)  # a second upgrade is a no-op


def test_records_round_trip_with_embeddings_and_missing_features(repository) -> None:
    records = [make_record(i) for i in range(3)]
    assert repository.add_predictions(records) == 3
    rows = repository.get(r.id for r in records)
    row = rows[records[1].id]
    np.testing.assert_array_equal(decode_embedding(row["embedding"]), np.arange(8) + 1)
    assert row["fps"] is None and row["brightness"] == 1.0
    assert row["probabilities"] == {"move_left": 0.9, "move_right": 0.1}
    assert row["source"] == "production" and row["true_label"] is None


def test_inserting_the_same_records_again_writes_each_once(repository) -> None:
    records = [make_record(i) for i in range(5)]
    assert repository.add_predictions(records[:3]) == 3
    assert repository.add_predictions(records) == 2
    assert repository.count() == 5


def test_the_logs_flush_writes_the_same_rows_and_skips_ids_already_stored(repository) -> None:
    records = [make_record(i) for i in range(4)]
    repository.add_predictions(records[:1])
    repository.add_fresh_predictions(records)  # one already stored: skipped, no error
    repository.add_fresh_predictions([])
    assert repository.count() == 4
    rows = repository.get(r.id for r in records)
    np.testing.assert_array_equal(decode_embedding(rows[records[2].id]["embedding"]),
                                  np.arange(8) + 2)
    fresh, stored = rows[records[2].id], rows[records[0].id]
    assert fresh["probabilities"] == {"move_left": 0.9, "move_right": 0.1}
    assert fresh["brightness"] == 2.0 and fresh["fps"] is None
    # Stored alike, whichever way they came in (dates, JSON, blobs).
    assert {k: type(v) for k, v in fresh.items()} == {k: type(v) for k, v in stored.items()}


def test_feedback_stores_known_ids_reports_unknown_ones_and_is_idempotent(repository) -> None:
    records = [make_record(i) for i in range(2)]
    repository.add_predictions(records)
    labels = {records[0].id: "move_right", "f" * 32: "move_left"}
    first = repository.apply_feedback(labels)
    second = repository.apply_feedback(labels)
    assert first.stored == second.stored == [records[0].id]
    assert first.unknown_ids == ["f" * 32]
    rows = repository.get([r.id for r in records])
    assert rows[records[0].id]["true_label"] == "move_right"
    assert rows[records[0].id]["labeled_at"] is not None
    assert rows[records[1].id]["true_label"] is None


def test_applying_a_label_keeps_a_newer_waiting_one(repository) -> None:
    """A feedback request can upsert a newer waiting label while another transaction applies
    an older one to the same id (its row landing); the older one must not delete it."""
    from datetime import UTC, datetime, timedelta

    record = make_record(0)
    repository.add_predictions([record])
    older = datetime(2026, 1, 1, tzinfo=UTC)
    with repository.engine.begin() as connection:  # the newer label, still waiting
        connection.execute(repository._upsert_pending(), [
            {"id": record.id, "label": "move_left", "labeled_at": older + timedelta(1)}])
    repository.apply_feedback({record.id: "move_right"}, now=older)
    assert repository.pending_label_count() == 1
    assert repository.resolve_pending_labels() == 1
    assert repository.get([record.id])[record.id]["true_label"] == "move_left"


def test_replaying_spooled_feedback_at_once_ends_as_applying_it_in_turn(database_url) -> None:
    """A spool's feedback requests go in one transaction; relabels, out-of-order stamps and
    labels still waiting for their row end where one request after another would."""
    from datetime import UTC, datetime, timedelta

    from monitor.store import PredictionRepository, create_store_engine
    from monitor.store.records import new_prediction_id

    t = datetime(2026, 1, 1, tzinfo=UTC)
    records = [make_record(i) for i in range(3)]
    waiting = new_prediction_id()  # issued, its row still in another replica's spool
    entries = [({records[0].id: "move_left", records[1].id: "move_left"}, t),
               ({records[0].id: "move_right"}, t + timedelta(seconds=2)),
               ({records[1].id: "steady"}, t + timedelta(seconds=1)),  # stamped later than..
               ({records[1].id: "blink"}, t),  # ..this, which came after it: steady wins
               ({waiting: "blink"}, t), ({waiting: "steady"}, t + timedelta(seconds=1)),
               ({"f" * 32: "blink"}, t)]  # never issued: dropped
    results = []
    for batched in (False, True):
        engine = create_store_engine(database_url)
        upgrade_database(engine)
        with engine.begin() as connection:  # the same database for both: start afresh
            for table in reversed(metadata.sorted_tables):
                connection.execute(table.delete())
        repository = PredictionRepository(engine)
        repository.add_predictions(records)
        if batched:
            repository.replay_feedback(entries)
        else:
            for labels, labeled_at in entries:
                repository.apply_feedback(labels, now=labeled_at)
        rows = repository.get([r.id for r in records])
        results.append(({i: (r["true_label"], r["labeled_at"]) for i, r in rows.items()},
                        repository.pending_label_count()))
        engine.dispose()
    assert results[0] == results[1]
    labels, pending = results[1]
    assert [labels[r.id][0] for r in records] == ["move_right", "steady", None]
    assert pending == 1


def test_counts_by_source_and_version(repository) -> None:
    repository.add_predictions([make_record(0), make_record(1, source="reference"),
                                make_record(2, model_version="2")])
    assert repository.count() == 3
    assert repository.count(source="reference") == 1
    assert repository.count(model_version="2") == 1


def test_embeddings_can_be_half_precision() -> None:
    vector = np.linspace(-1, 1, 16, dtype=np.float32)
    data = encode_embedding(vector, "float16")
    assert len(data) == 32
    np.testing.assert_allclose(decode_embedding(data, "float16"), vector, atol=1e-3)


def test_processes_starting_together_migrate_one_fresh_database_without_a_clash(
    database_url: str,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from monitor.store import create_store_engine

    engines = [create_store_engine(database_url) for _ in range(4)]  # four replicas' pools
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(upgrade_database, engines))  # raises if any migration clashed
        tables = sa.inspect(engines[0]).get_table_names()
        assert set(metadata.tables) <= set(tables)
        with engines[0].connect() as connection:
            assert connection.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        for engine in engines:
            engine.dispose()
