"""Dynamic batching: concurrent requests share one forward pass.

The unit of work is a group of clips (the clips of one video): a group is never split, so
its clips share one forward pass and one model version. The batch is collected by
:func:`collect_batch`, a small coroutine over a queue that is testable alone;
:class:`DynamicBatcher` runs it in a loop and calls the model in a single worker thread,
so the event loop never blocks on a forward pass. Only torch-free imports here: any
callable from a batch of clips to arrays can be the model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitor.errors import DeadlineExceeded, Overloaded

log = logging.getLogger(__name__)

# (N, T, H, W, 3) uint8 -> arrays with one row per clip (probabilities, embeddings, ...)
Outputs = tuple[np.ndarray, ...]
PredictFn = Callable[[np.ndarray], Outputs]


@dataclass
class _Pending:
    clips: np.ndarray
    future: asyncio.Future[Outputs]
    enqueued: float = field(default_factory=time.perf_counter)


async def collect_batch(
    queue: asyncio.Queue[Any], max_size: int, max_wait_s: float,
    size: Callable[[Any], int] = lambda _: 1, carry: list[Any] | None = None,
) -> list[Any]:
    """Wait for one item (or take the one in ``carry``), then take more until their ``size``
    adds up to ``max_size`` or ``max_wait_s`` has passed. An item that would overflow the
    batch is left in ``carry`` to start the next one (an item bigger than ``max_size`` goes
    alone)."""
    carry = [] if carry is None else carry
    batch = [carry.pop() if carry else await queue.get()]
    total = size(batch[0])
    deadline = time.perf_counter() + max_wait_s
    while total < max_size:
        if not queue.empty():
            item = queue.get_nowait()
        else:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                item = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                break
        if total + size(item) > max_size:
            carry.append(item)
            break
        batch.append(item)
        total += size(item)
    return batch


@dataclass(frozen=True)
class BatchStats:
    """Size and timing of one forward pass, for metrics."""

    size: int
    seconds: float


class DynamicBatcher:
    """Groups concurrent ``submit`` calls into batches of at most ``max_batch_size`` clips
    for ``predict``."""

    def __init__(
        self,
        predict: PredictFn,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[BatchStats], None] | None = None,
        max_queued_clips: int = 1024,
        deadline_s: float = 30.0,
    ) -> None:
        self.predict = predict
        self.max_queued_clips = max_queued_clips
        self.deadline_s = deadline_s
        self._queued_clips = 0
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._carry: list[_Pending] = []  # a group that did not fit the last batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidmon-model")
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="vidmon-batcher")

    async def stop(self) -> None:
        """Finish queued work, then stop the loop and the model thread."""
        while not self._queue.empty() or self._carry:
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._executor.shutdown(wait=True)

    @property
    def queued(self) -> int:
        """Clip groups waiting for a forward pass."""
        return self._queue.qsize() + len(self._carry)

    async def submit(self, clips: np.ndarray) -> Outputs:
        """The model's outputs for a group of clips (K, T, H, W, 3): its K rows of each
        array, all from one forward pass."""
        if self._task is None:
            raise RuntimeError("the batcher is not started")
        if self._queued_clips + len(clips) > self.max_queued_clips:
            raise Overloaded(f"{self._queued_clips} clips are waiting for the model (limit "
                             f"{self.max_queued_clips}, max_queued_clips); retry shortly")
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        self._queued_clips += len(clips)
        await self._queue.put(_Pending(clips, future))
        return await future

    def _expire(self, batch: list[_Pending]) -> list[_Pending]:
        """Answer the groups that waited past the deadline (504) and drop them: their
        clients have likely given up, and running them would delay everyone behind."""
        now = time.perf_counter()
        live = []
        for item in batch:
            self._queued_clips -= len(item.clips)
            if now - item.enqueued <= self.deadline_s:
                live.append(item)
            elif not item.future.done():
                item.future.set_exception(DeadlineExceeded(
                    f"waited over the limit of {self.deadline_s:g} s for the model "
                    "(request_deadline_s); retry shortly", retry_after_s=1))
        return live

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._expire(await collect_batch(
                self._queue, self.max_batch_size, self.max_wait_s,
                size=lambda item: len(item.clips), carry=self._carry))
            if not batch:
                continue
            started = time.perf_counter()
            try:
                clips = np.concatenate([item.clips for item in batch])
                outputs = await loop.run_in_executor(self._executor, self.predict, clips)
            except Exception as exc:  # the model failed: fail these requests, keep serving
                log.exception("forward pass of %d clips failed", len(batch))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            offset = 0
            for item in batch:
                rows = slice(offset, offset + len(item.clips))
                offset += len(item.clips)
                if not item.future.done():
                    item.future.set_result(tuple(array[rows] for array in outputs))
            if self.on_batch:
                self.on_batch(BatchStats(len(clips), time.perf_counter() - started))
