"""Nothing acknowledged is lost: the database goes away for real, records and labels spool,
then land once; a write returns only when its records are durable."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.errors import Overloaded
from monitor.store import PredictionRepository, create_store_engine, upgrade_database
from serving.spool import Spool
from serving.writer import DurableWriter
from tests.factories import make_record
from tests.waiting import wait_until

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path):
    folder = tmp_path / "db"
    engine = create_store_engine(f"sqlite:///{folder / 'vidmon.db'}")
    upgrade_database(engine)
    yield folder, engine
    engine.dispose()


def _take_down(folder: Path, engine) -> Path:
    """The database file becomes unreachable: its folder moves away, connections close."""
    away = folder.with_name("db-away")
    engine.dispose()
    folder.rename(away)
    return away


def _write_concurrently(writer: DurableWriter, groups: list[list]) -> None:
    """Many requests at once, each waiting for its own records to be durable."""
    async def run() -> None:
        await asyncio.gather(*[writer.write(group) for group in groups])
    asyncio.run(run())


def test_a_write_returns_once_committed_and_concurrent_writes_share_commits(store) -> None:
    _, engine = store
    repository = PredictionRepository(engine)
    writer = DurableWriter(repository, Spool(engine.url.database + ".spool"))
    writer.start()
    groups = [[make_record(10 * i + j) for j in range(2)] for i in range(40)]
    _write_concurrently(writer, groups)
    # Every acknowledged record is in the store the moment the writes return.
    assert repository.count() == 80
    assert writer.counters.flushes < 40  # group commit: fewer flushes than requests
    writer.stop()


def test_records_and_labels_during_an_outage_are_spooled_then_replayed_exactly_once(
    store, tmp_path: Path
) -> None:
    folder, engine = store
    repository = PredictionRepository(engine)
    spool = Spool(tmp_path / "spool.jsonl")
    writer = DurableWriter(repository, spool, batch_size=7, replay_interval_s=0.2)
    writer.start()
    before = [make_record(i) for i in range(10)]
    _write_concurrently(writer, [[r] for r in before])
    assert writer.counters.written == 10

    away = _take_down(folder, engine)
    during = [make_record(100 + i) for i in range(25)]
    _write_concurrently(writer, [[r] for r in during])
    assert writer.counters.spooled == 25 and not writer.store_available
    # Labels for predictions still in the spool are kept, never reported unknown.
    outage = writer.label_now({during[0].id: "move_right", before[0].id: "move_right",
                               "f" * 32: "move_left"}, NOW)
    assert set(outage.pending_ids) == {during[0].id, before[0].id}
    assert outage.unknown_ids == ["f" * 32]
    assert spool.pending() == 27

    away.rename(folder)  # the database is back
    wait_until(lambda: writer.spool_pending == 0 and writer.store_available)
    writer.stop()

    assert repository.count() == 35
    rows = repository.get(r.id for r in before + during)
    assert set(rows) == {r.id for r in before + during}
    assert rows[during[0].id]["true_label"] == "move_right"
    assert rows[before[0].id]["true_label"] == "move_right"
    assert spool.pending() == 0
    # A replay that is repeated (say after a crash before the segment was removed) adds
    # nothing.
    spool.append_records(during)
    assert writer.replay_once() == 25
    assert repository.count() == 35


def test_a_label_that_arrives_before_its_row_waits_for_it(store) -> None:
    _, engine = store
    repository = PredictionRepository(engine)
    record = make_record(1)
    early = repository.apply_feedback({record.id: "move_right"}, now=NOW)
    assert early.pending_ids == [record.id] and not early.unknown_ids
    assert repository.pending_label_count() == 1
    repository.add_predictions([record])
    row = repository.get([record.id])[record.id]
    assert row["true_label"] == "move_right" and repository.pending_label_count() == 0


def test_stop_flushes_queued_records_to_the_spool_when_the_database_is_gone(
    store, tmp_path: Path
) -> None:
    folder, engine = store
    repository = PredictionRepository(engine)
    spool = Spool(tmp_path / "spool.jsonl")
    writer = DurableWriter(repository, spool)
    _take_down(folder, engine)

    async def queue_then_stop() -> None:
        waits = [asyncio.create_task(writer.write([make_record(i)])) for i in range(12)]
        await asyncio.sleep(0.05)
        await asyncio.get_running_loop().run_in_executor(None, writer.stop)
        await asyncio.gather(*waits)  # never started: stop alone makes them durable
    asyncio.run(queue_then_stop())
    assert spool.pending() == 12


def test_a_full_queue_refuses_instead_of_dropping(store, tmp_path: Path) -> None:
    _, engine = store
    writer = DurableWriter(PredictionRepository(engine), Spool(tmp_path / "s.jsonl"),
                           max_queue=3)

    async def overfill() -> None:
        waits = [asyncio.create_task(writer.write([make_record(i)])) for i in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await writer.write([make_record(99)])
        writer.start()
        await asyncio.gather(*waits)
    asyncio.run(overfill())
    writer.stop()
    assert writer.counters.rejected == 1 and writer.counters.queued == 3
    assert PredictionRepository(engine).count() == 3


def test_a_writer_started_without_its_store_migrates_it_when_it_appears(tmp_path: Path) -> None:
    folder = tmp_path / "later"
    url = f"sqlite:///{folder / 'vidmon.db'}"
    engine = create_store_engine(url)
    folder.rmdir()  # the engine made the folder; without it SQLite cannot open the file
    repository = PredictionRepository(engine)
    writer = DurableWriter(repository, Spool(tmp_path / "spool.jsonl"), replay_interval_s=0.1,
                           ensure_store=lambda: upgrade_database(engine), store_ready=False)
    writer.start()
    _write_concurrently(writer, [[make_record(i)] for i in range(5)])
    assert writer.counters.spooled == 5
    folder.mkdir()
    wait_until(lambda: writer.spool_pending == 0)
    writer.stop()
    assert repository.count() == 5
