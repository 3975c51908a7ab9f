"""The demo waits for a retrain while it shows progress, and only gives up on a silent one.

Each retrain here is a real child process on a real SQLite store, writing its log the way
``vidmon retrain`` does (training.progress lines), slower in total than the stall limit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from monitor.retrain_policy import RetrainDecision
from monitor.store.engine import create_store_engine, upgrade_database
from monitor.store.retrains import RetrainRepository
from simulations.retrain_wait import last_progress, wait_for_retrain

STALL_S = 1.5

_CHILD = textwrap.dedent("""
    import logging, sys, time
    from monitor.store.engine import create_store_engine
    from monitor.store.retrains import RetrainRepository
    from training.progress import counted

    url, decision_id, steps, pause, log = sys.argv[1:6]
    logging.basicConfig(filename=log, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    retrains = RetrainRepository(create_store_engine(url))
    retrains.start(decision_id)
    for _ in counted(range(int(steps)), "decoding videos", "video", every_s=0):
        time.sleep(float(pause))
    if int(steps):
        retrains.finish(decision_id, status="rejected", run_id="r1", version="2",
                        gate={"reason": "not better"})
    else:
        time.sleep(float(pause))  # silent: started, then nothing
""")


def _decision(tmp_path: Path) -> tuple[str, RetrainRepository, str]:
    url = f"sqlite:///{tmp_path / 'vidmon.db'}"
    engine = create_store_engine(url)
    upgrade_database(engine)
    retrains = RetrainRepository(engine)
    return url, retrains, retrains.record(RetrainDecision(True, ["accuracy at risk"]),
                                          "clf", "1")


def _child(url: str, retrains: RetrainRepository, decision_id: str, steps: int,
           pause: float, log: Path) -> subprocess.Popen:
    """The retrain's process, once it has started (its imports take longer than the stall
    limit on a busy machine; the demo's own limit is 900 s)."""
    child = subprocess.Popen([sys.executable, "-c", _CHILD, url, decision_id, str(steps),
                              str(pause), str(log)])
    deadline = time.monotonic() + 60
    while retrains.get(decision_id)["status"] == "pending":
        assert child.poll() is None and time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    return child


def test_a_retrain_slower_than_the_stall_limit_is_waited_for_while_it_logs_progress(
        tmp_path: Path) -> None:
    url, retrains, decision_id = _decision(tmp_path)
    log = tmp_path / "retrain.log"
    child = _child(url, retrains, decision_id, steps=6, pause=0.8, log=log)
    said: list[str] = []
    try:
        waited = wait_for_retrain(lambda: retrains.get(decision_id), lambda d: 0, 3,
                                  said.append, log=log, stall_s=STALL_S, poll_s=0.1,
                                  say_every_s=0.5)
    finally:
        child.wait(timeout=60)
    assert waited.gave_up is None
    assert waited.decision["status"] == "rejected"
    assert waited.seconds > 2 * STALL_S  # longer than the limit, yet never stalled
    assert any("decoding videos: " in line and "/6 videos" in line for line in said), said
    assert last_progress(log).startswith("decoding videos: 6/6 videos")


def test_a_silent_retrain_is_given_up_after_the_stall_limit_and_says_why(
        tmp_path: Path) -> None:
    url, retrains, decision_id = _decision(tmp_path)
    log = tmp_path / "retrain.log"
    child = _child(url, retrains, decision_id, steps=0, pause=20, log=log)
    try:
        started = time.monotonic()
        waited = wait_for_retrain(lambda: retrains.get(decision_id), lambda d: 0, 3,
                                  lambda line: None, log=log, stall_s=STALL_S, poll_s=0.1)
        elapsed = time.monotonic() - started
    finally:
        child.kill()
        child.wait(timeout=60)
    assert waited.gave_up is not None and "no progress for 2s" in waited.gave_up
    assert waited.decision["status"] == "running"
    assert STALL_S < elapsed < STALL_S + 5


def test_a_failed_retrain_ends_the_wait_at_once_with_its_error(tmp_path: Path) -> None:
    from datetime import timedelta

    _, retrains, decision_id = _decision(tmp_path)
    retrains.start(decision_id)
    retrains.fail(decision_id, "CUDA out of memory", timedelta(minutes=5))
    waited = wait_for_retrain(lambda: retrains.get(decision_id), lambda d: 0, 3,
                              lambda line: None, stall_s=STALL_S, poll_s=0.1)
    assert waited.gave_up == "failed: CUDA out of memory"
    assert waited.seconds < STALL_S
