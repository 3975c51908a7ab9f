"""Torch work beside the model thread runs in a thread that ends with it (serving.threads)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serving.threads import in_own_thread


def test_in_own_thread_answers_from_a_fresh_thread_that_has_ended() -> None:
    ran_on: list[threading.Thread] = []

    def work(x: int) -> int:
        ran_on.append(threading.current_thread())
        return 2 * x

    async def twice() -> list[int]:
        return [await in_own_thread(work, 21), await in_own_thread(work, 4)]

    assert asyncio.run(twice()) == [42, 8]
    first, second = ran_on
    assert first is not second  # a thread per call, never a pooled one
    for thread in ran_on:
        assert thread is not threading.main_thread()
        thread.join(timeout=5)
        assert not thread.is_alive()


def test_in_own_thread_hands_the_error_to_the_caller() -> None:
    def fail() -> None:
        raise ValueError("no such version")

    with pytest.raises(ValueError, match="no such version"):
        asyncio.run(in_own_thread(fail))


def test_a_cancelled_caller_does_not_break_the_loop() -> None:
    release = threading.Event()

    async def main() -> None:
        task = asyncio.create_task(in_own_thread(release.wait))
        await asyncio.sleep(0.05)
        task.cancel()
        release.set()  # the thread answers a future nobody awaits any more
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)  # the late answer lands on the loop without an error

    asyncio.run(main())
