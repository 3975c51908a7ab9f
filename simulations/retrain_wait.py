"""Waiting for a retrain by its progress, not by the wall clock.

The demo holds its simulated clock while a retrain runs. It used to give up after 900 s of
wall time: on a busy machine the retrains were slower than that, the clock ran on, and the
challengers were promoted after their phases had ended (a demo of 1 h 43 min failing two
checks). A retrain is now waited for as long as it shows signs of life (its status, its
epochs in MLflow, lines in its log) and given up only when it failed, or showed none for
``stall_s`` seconds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FINISHED = ("promoted", "rejected", "cancelled")
STALL_S = 900.0
# A progress line of the retrain's log (training.progress, the epochs of training.train).
_PROGRESS = re.compile(r"(?:training\.progress|training\.train): (.*)$")


@dataclass
class Waited:
    """How a wait ended: the decision's last state, and why it was given up (or None)."""

    decision: dict[str, Any]
    gave_up: str | None
    seconds: float


def last_progress(log: Path | None, tail_bytes: int = 8192) -> str | None:
    """The last progress line of a retrain log, without its timestamp, or None."""
    if log is None or not log.exists():
        return None
    with log.open("rb") as handle:
        handle.seek(max(0, log.stat().st_size - tail_bytes))
        lines = handle.read().decode(errors="replace").splitlines()
    for line in reversed(lines):
        if match := _PROGRESS.search(line):
            return match.group(1).strip()
    return None


def stage(decision: dict[str, Any], epochs_done: int, epochs: int, log: Path | None) -> str:
    """What the retrain is doing, from the store, its MLflow epochs and its log."""
    status = decision.get("status")
    if status == "pending":
        return "waiting to start (one retrain runs at a time)"
    if epochs_done >= epochs:
        return f"trained ({epochs} epochs); gating, fitting the estimators, registering"
    line = last_progress(log)
    if epochs_done:
        return f"epoch {epochs_done}/{epochs} done" + (f"; {line}" if line else "")
    return line or "starting"


def wait_for_retrain(get: Callable[[], dict[str, Any]], epochs_done: Callable[[dict], int],
                     epochs: int, say: Callable[[str], None], *, log: Path | None = None,
                     stall_s: float = STALL_S, poll_s: float = 0.5,
                     say_every_s: float = 30.0) -> Waited:
    """Wait until the decision ``get`` returns is finished or failed; give up only after
    ``stall_s`` seconds in which neither its status, its epochs nor its log changed."""
    started = last_change = last_said = time.monotonic()
    seen: tuple[object, ...] | None = None
    said_epochs = -1
    while True:
        decision = get() or {}
        status = decision.get("status")
        now = time.monotonic()
        if status in FINISHED:
            return Waited(decision, None, now - started)
        if status == "failed":
            return Waited(decision, f"failed: {decision.get('error') or ''}", now - started)
        done = epochs_done(decision)
        mark = (status, decision.get("attempts"), done,
                log.stat().st_size if log is not None and log.exists() else 0)
        if mark != seen:
            seen, last_change = mark, now
        elif now - last_change > stall_s:
            return Waited(decision, f"no progress for {stall_s:.0f}s (status {status}, "
                                    f"{done} epochs, log {log}); the demo goes on without it",
                          now - started)
        if done != said_epochs or now - last_said >= say_every_s:
            say(f"    retraining: {stage(decision, done, epochs, log)}, "
                f"{now - started:.0f}s" + (f" (log: {log})" if log else ""))
            said_epochs, last_said = done, now
        time.sleep(poll_s)
