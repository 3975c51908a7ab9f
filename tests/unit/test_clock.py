"""The demo's simulated clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from simulations.clock import SimulatedClock, next_hour


def test_next_hour_is_strictly_after() -> None:
    assert next_hour(datetime(2026, 11, 24, 10, 59, 59, tzinfo=UTC)) == datetime(
        2026, 11, 24, 11, tzinfo=UTC)
    assert next_hour(datetime(2026, 11, 24, 11, tzinfo=UTC)) == datetime(
        2026, 11, 24, 12, tzinfo=UTC)


def test_stamps_stay_inside_the_hour_that_is_set() -> None:
    start = datetime(2026, 11, 24, 11, tzinfo=UTC)
    clock = SimulatedClock(start)
    first = clock()
    time.sleep(0.02)
    assert start <= first < clock() < start + timedelta(hours=1)
    clock.set_hour(5)
    assert clock.hour == 5
    assert start + timedelta(hours=5) <= clock() < start + timedelta(hours=6)
    with pytest.raises(ValueError, match="cannot go back"):
        clock.set_hour(4)
    with pytest.raises(ValueError, match="whole UTC hour"):
        SimulatedClock(start + timedelta(minutes=1))


def test_a_child_process_inherits_the_clock_as_an_offset() -> None:
    from datetime import UTC, datetime, timedelta

    from monitor.clock import OFFSET_VARIABLE, inherited_clock, offset_env, system_clock

    assert offset_env(system_clock) == {} and inherited_clock({}) is system_clock
    simulated = datetime(2030, 1, 1, 5, tzinfo=UTC)
    env = offset_env(lambda: simulated)
    child = inherited_clock(env)
    assert abs(child() - simulated) < timedelta(seconds=5)  # and it runs on from there
    with pytest.raises(ValueError, match=OFFSET_VARIABLE):
        inherited_clock({OFFSET_VARIABLE: "soon"})
