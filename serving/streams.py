"""Live streams: pulled by one replica each, classified causally over a sliding window.

Every replica looks at the active streams every ``media.poll_interval_s``; a stream no
replica holds (or whose holder stopped renewing for ``media.lease_s``) is taken with a
conditional update, so each stream is pulled once, and a replica that dies hands its
streams over. The holder reads frames in a thread (FFmpeg: RTSP, HLS, HTTP MPEG-TS, a
file), cuts the card's clips every ``hop`` model frames from frames already seen, and hands
each clip to the event loop through a queue of two: when the model is behind, the oldest
clip waiting is dropped (counted), so a stream never runs further behind live than two
clips. Each clip is logged under the stream's source; a change of label is an event. A
stream that ends or fails is reopened after 1, 2, 4 ... ``media.retry_max_s`` seconds; one
without frames for ``media.dead_after_s`` is reported dead, and still retried.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from monitor.card import ModelCard
from monitor.clock import system_clock
from monitor.errors import Overloaded
from monitor.features import VideoMeta
from monitor.media.reader import (
    clip_meta,
    frame_converter,
    location_for_ffmpeg,
    media_info,
    open_media,
    timed_frames,
)
from monitor.media.sampler import ClipSampler, TimedClip, model_frame_interval
from monitor.settings import MediaSettings
from monitor.store.engine import OutageLog
from monitor.store.media import StreamRepository
from monitor.store.records import new_prediction_id
from serving.service import ClipFacts, PlacedClip, PredictionService

log = logging.getLogger(__name__)


def default_hop(card: ModelCard, hop: int | None) -> int:
    """Model frames between a stream's clips: the setting, or half a clip."""
    return hop or max(1, card.frames // 2)


def change_time(start_s: float, frames: int, hop: int, interval_s: float) -> float:
    """When a label change most likely happened, given that the clip starting at
    ``start_s`` is the first with the new label: a model that follows the majority of a
    clip's frames names the new label once the change is at or before its frame
    ``ceil(frames / 2) - 1``, and the clip a hop earlier did not, so the change lies in a
    span of one hop; its middle is at most half a hop from the truth."""
    return start_s + (math.ceil(frames / 2) - 1) * interval_s - hop * interval_s / 2


@dataclass
class StreamStats:
    """One pulled stream's counters, for ``/metrics`` and its status."""

    source_id: str
    frames_in: int = 0
    frames_dropped: int = 0  # model frames of clips dropped while the model was behind
    clips: int = 0
    reconnects: int = 0
    lag_s: float = 0.0  # newest frame's arrival to its clip's answer, last clip
    state: str = "starting"
    last_error: str | None = None
    last_frame: float | None = None  # time.monotonic() of the newest frame


class _Pull:
    """One stream on this replica: a reading thread and the task answering its clips."""

    def __init__(self, row: dict[str, Any], card: ModelCard, media: MediaSettings,
                 max_frame_pixels: int, loop: asyncio.AbstractEventLoop) -> None:
        self.row, self.card, self.media = row, card, media
        self.max_frame_pixels, self.loop = max_frame_pixels, loop
        self.stats = StreamStats(row["source_id"])
        self.queue: asyncio.Queue[tuple[float, TimedClip]] = asyncio.Queue(maxsize=2)
        self.stop = threading.Event()
        self.meta: VideoMeta | None = None
        self.codec: str | None = None
        self.started = time.monotonic()
        self.first_frame: float | None = None  # monotonic time of the stream's first frame
        self.thread = threading.Thread(target=self._read, daemon=True,
                                       name=f"vidmon-stream-{row['id'][:8]}")
        self.task: asyncio.Task[None] | None = None

    def _offer(self, offset: float, clip: TimedClip) -> None:
        """On the loop: queue a clip, dropping the oldest waiting when full."""
        if self.queue.full():
            self.queue.get_nowait()
            self.stats.frames_dropped += min(self.row["hop"], self.card.frames)
        self.queue.put_nowait((offset, clip))

    def _read(self) -> None:
        delay = 1.0
        while not self.stop.is_set():
            try:
                self._read_once()
                self.stats.last_error = "the stream ended"
                delay = 1.0 if self.stats.state == "live" else delay
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                self.stats.last_error = str(exc)[:500] or type(exc).__name__
            if self.stop.is_set():
                return
            self.stats.reconnects += 1
            last = self.stats.last_frame or self.started
            dead = time.monotonic() - last > self.media.dead_after_s
            self.stats.state = "dead" if dead else "reconnecting"
            self.stop.wait(delay)
            delay = min(delay * 2, self.media.retry_max_s)

    def _read_once(self) -> None:
        url = location_for_ffmpeg(self.row["url"])
        with open_media(url, self.media.open_timeout_s, self.max_frame_pixels) as container:
            info = media_info(container)
            self.meta = clip_meta(info, self.card.frames * model_frame_interval(
                self.card, self.media.uniform_clip_s))
            self.codec = info.codec
            sampler = ClipSampler(self.card, self.row["hop"], frame_converter(self.card),
                                  self.media.uniform_clip_s)
            offset = None
            for t, frame in timed_frames(container, self.max_frame_pixels):
                if self.stop.is_set():
                    return
                now = time.monotonic()
                if offset is None:
                    # Stream time is the first connection's own clock (its timestamps
                    # from its first frame); a reconnection starts at the wall time
                    # elapsed since that frame, so times keep increasing.
                    self.first_frame = self.first_frame or now
                    offset = now - self.first_frame
                self.stats.frames_in += 1
                self.stats.last_frame, self.stats.state = now, "live"
                for clip in sampler.push(t, frame):
                    self.loop.call_soon_threadsafe(self._offer, offset, clip)


class StreamPuller:
    """Takes the streams this replica may pull and pulls them until stopped or lost."""

    def __init__(self, service: PredictionService, streams: StreamRepository,
                 media: MediaSettings, max_frame_pixels: int, holder: str) -> None:
        self.service, self.streams, self.media = service, streams, media
        self.max_frame_pixels, self.holder = max_frame_pixels, holder
        self.pulls: dict[str, _Pull] = {}

    @property
    def stats(self) -> list[StreamStats]:
        """The counters of the streams pulled here."""
        return [p.stats for p in self.pulls.values()]

    async def run(self) -> None:
        """Take, renew and give up streams until cancelled."""
        outage = OutageLog(log, "looking after the streams")
        while True:
            try:
                await self._tick()
                outage.ok()
            except Exception as error:  # the store may be away: look again later
                outage.failed(error)
            await asyncio.sleep(self.media.poll_interval_s)

    async def _tick(self) -> None:
        now = system_clock()
        for stream_id, pull in list(self.pulls.items()):
            stats = pull.stats
            last = (None if stats.last_frame is None else
                    now.timestamp() - (time.monotonic() - stats.last_frame))
            kept = await asyncio.to_thread(
                self.streams.report, stream_id, self.holder, now, state=stats.state,
                last_error=stats.last_error,
                last_frame_at=None if last is None else datetime.fromtimestamp(last, UTC))
            if not kept:  # stopped, or taken by another replica after a pause
                self._end(stream_id)
        for row in await asyncio.to_thread(self.streams.active, self.media.max_streams):
            if row["id"] in self.pulls:
                continue
            if await asyncio.to_thread(self.streams.claim, row["id"], self.holder,
                                       self.media.lease_s, now):
                self._start(row)

    def _start(self, row: dict[str, Any]) -> None:
        log.info("pulling stream %s (%s) from %s", row["id"], row["source_id"], row["url"])
        pull = _Pull(row, self.service.runtime.card, self.media, self.max_frame_pixels,
                     asyncio.get_running_loop())
        pull.thread.start()
        pull.task = asyncio.create_task(self._answer(pull))
        self.pulls[row["id"]] = pull

    def _end(self, stream_id: str) -> None:
        pull = self.pulls.pop(stream_id, None)
        if pull is not None:
            log.info("stopped pulling stream %s", stream_id)
            pull.stop.set()
            if pull.task is not None:
                pull.task.cancel()

    async def stop(self) -> None:
        """Stop every pull and give the streams up, so other replicas take them at once."""
        for stream_id in list(self.pulls):
            self._end(stream_id)
            try:
                await asyncio.to_thread(self.streams.release, stream_id, self.holder)
            except Exception:  # noqa: BLE001 - the lease runs out instead
                log.warning("could not give stream %s up; its lease runs out", stream_id)

    async def _answer(self, pull: _Pull) -> None:
        """Classify the stream's clips as they come; record each change of label."""
        previous: str | None = None
        while True:
            offset, clip = await pull.queue.get()
            placed = [PlacedClip(new_prediction_id(), round(offset + clip.start_s, 3),
                                 round(offset + clip.end_s, 3))]
            facts = ClipFacts(pull.meta, "video/stream", None, pull.codec)
            try:
                runtime, probabilities = await self.service.log_clips(
                    clip.clip[np.newaxis], placed, facts, None, pull.row["source_id"])
            except Overloaded:
                pull.stats.frames_dropped += min(pull.row["hop"], pull.card.frames)
                continue
            except Exception as exc:  # noqa: BLE001 - one clip lost; the stream goes on
                log.exception("stream %s: a clip could not be classified", pull.row["id"])
                pull.stats.last_error = str(exc)[:500]
                continue
            pull.stats.clips += 1
            pull.stats.lag_s = time.monotonic() - clip.arrived
            top = int(np.argmax(probabilities[0]))
            label = runtime.label_names[top]
            if label != previous:
                at = placed[0].start_s if previous is None else change_time(
                    placed[0].start_s, pull.card.frames, pull.row["hop"],
                    model_frame_interval(pull.card, self.media.uniform_clip_s))
                await asyncio.to_thread(self.streams.add_event, {
                    "stream_id": pull.row["id"], "created_at": self.service.clock(),
                    "at_s": round(at, 3), "label": label,
                    "confidence": float(probabilities[0][top]),
                    "model_version": runtime.version})
                previous = label
