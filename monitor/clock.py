"""Where vidmon's jobs read the time.

Every job that stamps or windows data takes a :data:`Clock`, the wall clock by default.
Simulations pass their own, so days of traffic, windows, label delays and cooldowns run on
simulated time with the same code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


# A child process (a retrain the monitor starts) reads its parent's clock as an offset from
# the wall clock: on simulated time its records then fall on the same time line.
OFFSET_VARIABLE = "VIDMON_CLOCK_OFFSET_S"


def offset_env(clock: Clock) -> dict[str, str]:
    """The variable that gives a child process ``clock`` (nothing for the wall clock)."""
    if clock is system_clock:
        return {}
    return {OFFSET_VARIABLE: repr((clock() - system_clock()).total_seconds())}


def inherited_clock(environ: Mapping[str, str] | None = None) -> Clock:
    """The clock the parent process passed down with :func:`offset_env`: the wall clock
    moved by its offset, or the wall clock itself."""
    text = (os.environ if environ is None else environ).get(OFFSET_VARIABLE, "")
    if not text:
        return system_clock
    try:
        offset = timedelta(seconds=float(text))
    except ValueError as exc:
        raise ValueError(f"{OFFSET_VARIABLE} must be seconds, not {text!r}") from exc
    return lambda: system_clock() + offset
