"""Where vidmon's jobs read the time.

Every job that stamps or windows data takes a :data:`Clock`, the wall clock by default.
Simulations pass their own, so days of traffic, windows, label delays and cooldowns run on
simulated time with the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)
