"""Simulated time for the demo: the hour moves only when the demo says so.

Within an hour the clock follows the wall clock from the hour's start (capped before the
next hour), so every prediction and label of hour ``h`` is stamped inside ``[h, h+1)``.
Setting the next hour is what ends a window; the clock stands still in between, so a
retrain that takes a minute of real time takes no simulated time.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime, timedelta

_LAST_SECOND = timedelta(hours=1) - timedelta(microseconds=1)


def next_hour(after: datetime) -> datetime:
    """The first whole UTC hour strictly after ``after``."""
    epoch = after.astimezone(UTC).timestamp()
    return datetime.fromtimestamp(math.floor(epoch / 3600 + 1) * 3600, tz=UTC)


class SimulatedClock:
    """A :data:`monitor.clock.Clock` whose hours are set by the simulation."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None or start.timestamp() % 3600:
            raise ValueError(f"the simulated clock starts on a whole UTC hour, not {start}")
        self.start = start
        self._hour = 0
        self._since = time.monotonic()
        self._lock = threading.Lock()

    @property
    def hour(self) -> int:
        """The simulated hour now (0 at the start)."""
        return self._hour

    def at(self, hour: float) -> datetime:
        """The time ``hour`` simulated hours after the start."""
        return self.start + timedelta(hours=hour)

    def set_hour(self, hour: int) -> None:
        """Move to the start of ``hour``; time never runs backwards."""
        with self._lock:
            if hour < self._hour:
                raise ValueError(f"the clock is at hour {self._hour}; it cannot go back to {hour}")
            self._hour, self._since = hour, time.monotonic()

    def __call__(self) -> datetime:
        with self._lock:
            elapsed = timedelta(seconds=time.monotonic() - self._since)
            return self.at(self._hour) + min(elapsed, _LAST_SECOND)
