"""Retrains run by workers that claim them from the store (SQLite and PostgreSQL): one worker
at a time holds a retrain, a worker killed with SIGKILL mid-run is taken over after the lease
and its retrain dies with it, and a worker stopped with SIGTERM gives its retrain back.

The workers' child here stands in for ``vidmon retrain`` (which trains a model for a
minute): it takes a few seconds, then records its outcome the way the retrain does, and
appends a line to a file so that the test counts the runs that finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from monitor.closed_loop import RetrainWorker
from monitor.retrain_policy import RetrainDecision
from monitor.settings import RetrainSettings, Settings
from monitor.store import create_store_engine, upgrade_database
from monitor.store.retrains import RetrainRepository
from tests.waiting import wait_until

NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)


def _retrains(database_url: str) -> RetrainRepository:
    engine = create_store_engine(database_url)
    upgrade_database(engine)
    return RetrainRepository(engine)


def test_one_worker_holds_a_retrain_until_its_lease_runs_out(database_url: str) -> None:
    retrains = _retrains(database_url)
    decision = retrains.record(RetrainDecision(True, ["drift"], []), "m", "1", now=NOW)
    taken = retrains.claim("a", NOW, lease_s=60, max_attempts=3)
    assert taken is not None and taken["id"] == decision and taken["attempts"] == 1
    assert retrains.claim("b", NOW + timedelta(seconds=30), 60, 3) is None
    assert retrains.heartbeat(decision, "a", NOW + timedelta(seconds=30))
    assert retrains.claim("b", NOW + timedelta(seconds=80), 60, 3) is None  # renewed at 30
    taken = retrains.claim("b", NOW + timedelta(seconds=91), 60, 3)  # a went quiet
    assert taken is not None and taken["holder"] == "b" and taken["attempts"] == 2
    assert not retrains.heartbeat(decision, "a", NOW + timedelta(seconds=92))
    assert not retrains.holds(decision, "a") and retrains.holds(decision, "b")
    assert not retrains.give_back(decision, "a", NOW)  # not a's to give
    assert retrains.give_back(decision, "b", NOW + timedelta(seconds=95))
    again = retrains.claim("c", NOW + timedelta(seconds=95), 60, 3)
    assert again is not None and again["attempts"] == 2  # a give-back is not an attempt
    retrains.engine.dispose()


_STAND_IN = textwrap.dedent("""
    import os, sys, time
    from monitor.store import create_store_engine
    from monitor.store.retrains import RetrainRepository
    decision = sys.argv[sys.argv.index("--decision") + 1]
    time.sleep(float(os.environ["STAND_IN_SECONDS"]))
    engine = create_store_engine(os.environ["VIDMON_DATABASE_URL"])
    RetrainRepository(engine).finish(decision, status="rejected", run_id=str(os.getpid()),
                                     version=str(os.getpid()), gate={})
    with open(os.environ["STAND_IN_LOG"], "a") as log:
        log.write(f"{decision} {os.getpid()}\\n")
""")

_WORKER = textwrap.dedent("""
    import sys
    from monitor.closed_loop import RetrainWorker
    from monitor.settings import Settings
    from monitor.store import create_store_engine
    from monitor.store.retrains import RetrainRepository
    settings = Settings()
    worker = RetrainWorker(settings, RetrainRepository(create_store_engine(
        settings.database_url)), command=sys.argv[1:], poll_s=0.2, holder="doomed")
    worker.serve_forever()
""")


def _env(database_url: str, tmp_path: Path, seconds: float) -> dict[str, str]:
    return {**os.environ, "VIDMON_DATABASE_URL": database_url,
            "VIDMON_RETRAIN__LEASE_S": "3", "STAND_IN_SECONDS": str(seconds),
            "STAND_IN_LOG": str(tmp_path / "finished.log")}


def test_a_worker_killed_mid_retrain_is_taken_over_and_the_retrain_finishes_once(
        database_url: str, tmp_path: Path, monkeypatch) -> None:
    retrains = _retrains(database_url)
    decision = retrains.record(RetrainDecision(True, ["drift"], []), "m", "1")
    env = _env(database_url, tmp_path, seconds=6)
    stand_in = [sys.executable, "-c", _STAND_IN]
    doomed = subprocess.Popen([sys.executable, "-c", _WORKER, *stand_in], env=env,
                              cwd=tmp_path)
    try:
        wait_until(lambda: (retrains.get(decision) or {}).get("holder") == "doomed", 30)
        time.sleep(1.0)  # its retrain is under way
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
    finally:
        if doomed.poll() is None:
            doomed.kill()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(database_url=database_url,
                        retrain=RetrainSettings(lease_s=3, backoff_s=1))
    survivor = RetrainWorker(settings, retrains, command=stand_in, poll_s=0.2,
                             holder="survivor")
    thread = threading.Thread(target=survivor.serve_forever, daemon=True)
    thread.start()
    try:
        wait_until(lambda: (retrains.get(decision) or {}).get("status") == "rejected", 60)
        time.sleep(7)  # long enough for the killed worker's child to have finished too
    finally:
        survivor.stop_event.set()
        thread.join(20)
    finished = (tmp_path / "finished.log").read_text().splitlines()
    assert len(finished) == 1, finished  # the killed worker's child died with it
    row = retrains.get(decision)
    assert row["attempts"] == 2 and row["holder"] == "survivor"
    assert row["challenger_version"] == finished[0].split()[1]
    retrains.engine.dispose()


def test_a_worker_stopped_gives_its_retrain_back_at_once(database_url: str,
                                                         tmp_path: Path, monkeypatch) -> None:
    retrains = _retrains(database_url)
    decision = retrains.record(RetrainDecision(True, ["drift"], []), "m", "1")
    for key, value in _env(database_url, tmp_path, seconds=60).items():
        monkeypatch.setenv(key, value)
    settings = Settings(database_url=database_url, retrain=RetrainSettings(lease_s=30))
    worker = RetrainWorker(settings, retrains, command=[sys.executable, "-c", _STAND_IN],
                           poll_s=0.2, holder="leaving")
    thread = threading.Thread(target=worker.serve_forever, daemon=True)
    thread.start()
    wait_until(lambda: (retrains.get(decision) or {}).get("holder") == "leaving", 30)
    started = time.monotonic()
    worker.stop_event.set()
    thread.join(30)
    assert time.monotonic() - started < 12  # its child stopped within the grace period
    row = retrains.get(decision)
    assert row["status"] == "failed" and row["attempts"] == 0 and row["holder"] is None
    assert "given back" in row["error"]
    taken = retrains.claim("next", datetime.now(UTC), 30, 3)  # due at once for another
    assert taken is not None and taken["id"] == decision
    assert not (tmp_path / "finished.log").exists()
    retrains.engine.dispose()


def test_a_worker_cut_from_the_store_kills_its_retrain_before_the_lease_runs_out(
        database_url: str, tmp_path: Path, monkeypatch) -> None:
    """The store goes away under a worker (its heartbeats fail): its child must be dead
    before another worker may take the retrain over, a lease after the last renewal."""
    retrains = _retrains(database_url)
    decision = retrains.record(RetrainDecision(True, ["drift"], []), "m", "1")
    for key, value in _env(database_url, tmp_path, seconds=60).items():
        monkeypatch.setenv(key, value)
    lease = 6.0
    settings = Settings(database_url=database_url, retrain=RetrainSettings(lease_s=lease))
    worker = RetrainWorker(settings, retrains, command=[sys.executable, "-c", _STAND_IN],
                           poll_s=0.2, holder="cut-off")
    renewed: list[float] = []
    real_heartbeat = retrains.heartbeat

    def heartbeat(*args):  # the cable is cut once the child runs
        if renewed:
            raise OSError("connection timed out")
        renewed.append(time.monotonic())
        return real_heartbeat(*args)

    monkeypatch.setattr(retrains, "heartbeat", heartbeat)
    ran: list[str | None] = []
    thread = threading.Thread(target=lambda: ran.append(worker.run_once()), daemon=True)
    thread.start()
    thread.join(lease * 3)
    assert ran == [decision]
    stopped_after = time.monotonic() - renewed[0]
    assert lease / 2 <= stopped_after < lease, stopped_after
    assert retrains.get(decision)["status"] == "running"  # for another worker to take over
    assert not (tmp_path / "finished.log").exists()
    retrains.engine.dispose()
