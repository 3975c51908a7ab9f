"""The dynamic batcher, without HTTP."""

from __future__ import annotations

import asyncio
import queue
import threading

import numpy as np
import pytest

from serving.batcher import STOP, BatchStats, DynamicBatcher, collect_batch


class CountingModel:
    """Sums each clip's pixels; records every batch size it is called with."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batch_sizes: list[int] = []
        self.threads: set[str] = set()
        self.fail_on = fail_on

    def __call__(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.batch_sizes.append(len(clips))
        self.threads.add(threading.current_thread().name)
        if self.fail_on is not None and len(self.batch_sizes) == self.fail_on:
            raise RuntimeError("model failure")
        sums = clips.reshape(len(clips), -1).sum(axis=1).astype(np.float32)
        return sums[:, None], np.stack([sums, -sums], axis=1)


def _clip(value: int, clips: int = 1) -> np.ndarray:
    return np.full((clips, 2, 3, 3, 3), value, dtype=np.uint8)


def test_collect_batch_takes_what_is_queued_up_to_the_limit() -> None:
    source: queue.Queue = queue.Queue()
    for i in range(5):
        source.put_nowait(i)
    first, _ = collect_batch(source, max_size=3, max_wait_s=0.0)
    second, stopped = collect_batch(source, max_size=3, max_wait_s=0.0)
    assert (len(first), len(second), source.qsize(), stopped) == (3, 2, 0, False)


def test_collect_batch_waits_for_late_items_until_the_deadline() -> None:
    source: queue.Queue = queue.Queue()
    source.put_nowait("a")
    threading.Timer(0.02, source.put_nowait, args=("b",)).start()
    batch, _ = collect_batch(source, max_size=8, max_wait_s=0.5)
    assert batch == ["a", "b"]


def test_collect_batch_stops_at_the_stop_marker_after_what_is_ahead_of_it() -> None:
    source: queue.Queue = queue.Queue()
    for item in ("a", STOP, "b"):
        source.put_nowait(item)
    assert collect_batch(source, max_size=8, max_wait_s=0.0) == (["a"], True)


def test_stop_answers_every_queued_request_first() -> None:
    async def scenario() -> list[float]:
        model = CountingModel()
        batcher = DynamicBatcher(model, max_batch_size=2, max_wait_ms=0)
        await batcher.start()
        pending = [asyncio.create_task(batcher.submit(_clip(i, clips=2 if i % 2 else 1)))
                   for i in range(7)]
        await asyncio.sleep(0)
        await batcher.stop()
        return [float(task.result()[0][0, 0]) for task in pending]

    assert asyncio.run(scenario()) == [float(i * 54) for i in range(7)]


def test_concurrent_submits_share_forward_passes_and_get_their_own_answers() -> None:
    model = CountingModel()
    stats: list[BatchStats] = []

    async def scenario() -> list[float]:
        batcher = DynamicBatcher(model, max_batch_size=8, max_wait_ms=50, on_batch=stats.append)
        await batcher.start()
        results = await asyncio.gather(*[batcher.submit(_clip(i)) for i in range(20)])
        await batcher.stop()
        return [float(probabilities[0, 0]) for probabilities, _ in results]

    sums = asyncio.run(scenario())
    assert sums == [float(i * 54) for i in range(20)]  # each caller gets its own row
    assert sum(model.batch_sizes) == 20
    assert max(model.batch_sizes) == 8 and len(model.batch_sizes) <= 4
    assert [s.size for s in stats] == model.batch_sizes
    assert model.threads == {"vidmon-model"}  # the model never runs on the event loop


def test_a_failing_batch_fails_its_requests_and_the_batcher_keeps_serving() -> None:
    model = CountingModel(fail_on=1)

    async def scenario() -> tuple[list[BaseException | tuple], tuple]:
        batcher = DynamicBatcher(model, max_batch_size=4, max_wait_ms=20)
        await batcher.start()
        first = await asyncio.gather(*[batcher.submit(_clip(1)) for _ in range(3)],
                                     return_exceptions=True)
        after = await batcher.submit(_clip(2))
        await batcher.stop()
        return first, after

    first, after = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) for r in first)
    assert float(after[0][0, 0]) == 2 * 54


def test_before_batch_runs_in_the_model_thread_before_every_forward_pass() -> None:
    events: list[tuple[str, str]] = []

    def model(clips: np.ndarray) -> tuple[np.ndarray]:
        events.append(("forward", threading.current_thread().name))
        return (clips.reshape(len(clips), -1).sum(axis=1),)

    async def scenario() -> None:
        batcher = DynamicBatcher(model, max_batch_size=2, max_wait_ms=0, before_batch=lambda:
                                 events.append(("before", threading.current_thread().name)))
        await batcher.start()
        await asyncio.gather(*[batcher.submit(_clip(i)) for i in range(5)])
        await batcher.stop()

    asyncio.run(scenario())
    forwards = sum(kind == "forward" for kind, _ in events)
    assert forwards >= 3  # 5 clips, at most 2 a batch
    assert events == [("before", "vidmon-model"), ("forward", "vidmon-model")] * forwards


def test_submit_before_start_is_an_error() -> None:
    async def scenario() -> None:
        await DynamicBatcher(CountingModel()).submit(_clip(0))

    with pytest.raises(RuntimeError, match="not started"):
        asyncio.run(scenario())


def test_a_video_s_clips_stay_in_one_forward_pass_and_batches_count_clips() -> None:
    model = CountingModel()

    async def scenario() -> list[np.ndarray]:
        batcher = DynamicBatcher(model, max_batch_size=4, max_wait_ms=50)
        await batcher.start()
        results = await asyncio.gather(batcher.submit(_clip(1, clips=3)),
                                       batcher.submit(_clip(2, clips=3)),
                                       batcher.submit(_clip(3, clips=1)))
        await batcher.stop()
        return [probabilities[:, 0] for probabilities, _ in results]

    first, second, third = asyncio.run(scenario())
    assert first.tolist() == [54.0] * 3 and second.tolist() == [108.0] * 3
    assert third.tolist() == [162.0]
    # 3 + 3 clips overflow a batch of 4: the second video waits rather than being split.
    assert max(model.batch_sizes) <= 4 and sum(model.batch_sizes) == 7
