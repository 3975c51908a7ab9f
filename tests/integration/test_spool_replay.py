"""Nothing acknowledged is lost: the database goes away for real, records spool, then land once."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.errors import Overloaded
from monitor.store import PredictionRepository, create_store_engine, upgrade_database
from serving.spool import Spool
from serving.writer import PredictionWriter
from tests.factories import make_record
from tests.waiting import wait_until


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


def test_records_written_while_the_database_is_down_are_replayed_exactly_once(
    store, tmp_path: Path
) -> None:
    folder, engine = store
    repository = PredictionRepository(engine)
    spool = Spool(tmp_path / "spool.jsonl")
    writer = PredictionWriter(repository, spool, batch_size=7, flush_interval_s=0.02,
                              replay_interval_s=0.2)
    writer.start()
    before = [make_record(i) for i in range(10)]
    for record in before:
        writer.submit(record)
    wait_until(lambda: writer.counters.written == 10)

    away = _take_down(folder, engine)
    during = [make_record(100 + i) for i in range(25)]
    for record in during:
        writer.submit(record)
    wait_until(lambda: writer.counters.spooled == 25)
    assert spool.pending() == 25

    away.rename(folder)  # the database is back
    wait_until(lambda: writer.counters.replayed == 25)
    writer.stop()

    assert repository.count() == 35
    assert set(repository.get(r.id for r in before + during)) == {r.id for r in before + during}
    assert spool.pending() == 0
    # A replay that is repeated (say after a crash before the spool was removed) adds nothing.
    spool.append(during)
    assert spool.replay(repository.add_predictions) == 25
    assert repository.count() == 35


def test_stop_flushes_queued_records_to_the_spool_when_the_database_is_gone(
    store, tmp_path: Path
) -> None:
    folder, engine = store
    repository = PredictionRepository(engine)
    spool = Spool(tmp_path / "spool.jsonl")
    writer = PredictionWriter(repository, spool, flush_interval_s=5.0)
    _take_down(folder, engine)
    for i in range(12):
        writer.submit(make_record(i))
    writer.stop()  # never started: stop alone must still flush what was acknowledged
    assert spool.pending() == 12


def test_a_full_queue_refuses_instead_of_dropping(store, tmp_path: Path) -> None:
    _, engine = store
    writer = PredictionWriter(PredictionRepository(engine), Spool(tmp_path / "s.jsonl"),
                              max_queue=3)
    for i in range(3):
        writer.submit(make_record(i))
    with pytest.raises(Overloaded):
        writer.submit(make_record(99))
    assert writer.counters.rejected == 1 and writer.counters.queued == 3
    writer.stop()
    assert PredictionRepository(engine).count() == 3
