"""Handing work and answers between threads and the event loop.

:func:`settle` answers an awaiting request from another thread (through
``loop.call_soon_threadsafe``), unless its client has gone away. :func:`in_own_thread` runs
a call in a thread started for it, which ends with it: the way to run torch work (loading,
warming up a model) beside the model thread.

Why a thread that ends: on CPU, torch's OpenMP runtime (libgomp) keeps a pool of worker
threads for every thread that has ever run a parallel region; once the pools hold more
threads than the machine has cores, libgomp stops spinning between regions for all of them
("throttled" waiting) and every operator pays a futex wake-up. Measured on 2 cores: the
model thread's batch-of-one forward pass took 6.0 ms while it was the only such thread and
12.0 ms once any other thread had run one parallel region (``torch.profiler``: batch norm
17 -> 96 us, ReLU 5 -> 34 us a call; ``bench/thread_pool_bench.py``). A thread that ends
takes its pool with it, so the model thread is left alone again.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the event loop: give ``future`` its result or error, unless it is already done
    (its caller went away or was cancelled)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


async def in_own_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a thread started for this call and ended with it."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
            loop.call_soon_threadsafe(settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(settle, future, result, None)

    threading.Thread(target=run, name="vidmon-load", daemon=True).start()
    return await future
