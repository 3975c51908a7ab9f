"""Long videos: taken in as jobs, classified clip by clip in the background, resumable.

A job's file is written to ``media.video_dir`` and fsynced before its row is committed, so
an accepted job survives a restart. With ``media.video_store`` (``s3://...``) the file is
then put there before the row is committed, so any replica can take the job: the one that
does copies it to its own ``video_dir`` first. Without it, only replicas that see the
folder take the job. Any replica whose ``max_jobs`` allows takes the oldest
waiting job and holds it by heartbeat. Decoding runs in a thread that hands the model
batches of ``job_batch_clips`` clips through a queue of two, so memory is the sampler's
ring and two batches whatever the video's length. Each clip is logged like any prediction
under the job's id (its id derived from the job's and its index, so a job taken over from
a replica that died writes no clip twice), with its place in the video; only
``monitor.clips_per_video`` of them, evenly spaced, are in reports. Holds are timed on the
system clock, not the service's (a simulation's clock runs faster than the leases may).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from monitor.card import ModelCard
from monitor.clock import system_clock
from monitor.errors import Overloaded, PayloadTooLarge, VidmonError
from monitor.features import VideoMeta
from monitor.media.reader import (
    clip_meta,
    frame_converter,
    location_for_ffmpeg,
    media_info,
    open_media,
    timed_frames,
)
from monitor.objects import is_remote, open_store, open_url
from monitor.media.sampler import ClipSampler, TimedClip, model_frame_interval, sample_clips
from monitor.media.timeline import overall_label
from monitor.settings import MediaSettings, ObjectStoreSettings
from monitor.store.engine import OutageLog
from monitor.store.media import VideoJobRepository
from monitor.store.records import derived_prediction_id
from serving.service import ClipFacts, PlacedClip, PredictionService

log = logging.getLogger(__name__)
_CHUNK = 1024 * 1024


def expected_clips(duration_s: float | None, card: ModelCard, uniform_clip_s: float
                   ) -> int | None:
    """Clips a video of ``duration_s`` gives when tiled by the card's clip (the last one
    ending at the end); None when the duration is unknown."""
    if duration_s is None or duration_s <= 0:
        return None
    # model frames at 0, dt, 2 dt ... before the end
    interval = model_frame_interval(card, uniform_clip_s)
    model_frames = max(1, math.ceil(duration_s / interval - 1e-6))
    return max(1, math.ceil(model_frames / card.frames))


def in_report_sample(index: int, expected: int | None, cap: int) -> bool:
    """Whether clip ``index`` of a video of ``expected`` clips is one of the ``cap`` its
    reports test: evenly spaced over the video (the first ``cap`` when its length is not
    known), so an hour-long file weighs in a window like ``cap`` clips."""
    if expected is None or expected <= cap:
        return index < cap
    if index >= expected:
        return False
    return index == 0 or (index * cap) // expected != ((index - 1) * cap) // expected


def save_upload(stream: BinaryIO, path: Path, limit: int) -> int:
    """Copy an upload to ``path`` and fsync it; its size. ``PayloadTooLarge`` (and no
    file) past ``limit`` bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    try:
        with open(path, "wb") as out:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the video is over the limit of {limit} bytes "
                                          "(media.max_video_bytes)")
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return size


@dataclass(frozen=True)
class Probe:
    """What a job's video says of itself before it is queued."""

    duration_s: float | None
    clips_expected: int | None


def probe_video(location: str, card: ModelCard, media: MediaSettings,
                max_frame_pixels: int) -> Probe:
    """Open the video and check it against the limits (blocking)."""
    with open_media(location_for_ffmpeg(location), media.open_timeout_s,
                    max_frame_pixels) as container:
        info = media_info(container)
    if info.width * info.height > max_frame_pixels:
        raise PayloadTooLarge(f"frames of {info.width}x{info.height} are over the limit of "
                              f"{max_frame_pixels} pixels a frame (max_frame_pixels)")
    if info.duration_s is not None and info.duration_s > media.max_video_seconds:
        raise PayloadTooLarge(f"the video lasts {info.duration_s:.0f} s, over the limit of "
                              f"{media.max_video_seconds:g} s (media.max_video_seconds)")
    return Probe(info.duration_s, expected_clips(info.duration_s, card,
                                                 media.uniform_clip_s))


class _Decoder:
    """Decodes a job's video in a thread, handing batches of clips to the event loop
    through a queue of two; stops when asked."""

    def __init__(self, location: str, card: ModelCard, media: MediaSettings,
                 max_frame_pixels: int, skip: int, loop: asyncio.AbstractEventLoop) -> None:
        self.location, self.card, self.media = location, card, media
        self.max_frame_pixels, self.skip, self.loop = max_frame_pixels, skip, loop
        self.queue: asyncio.Queue[list[TimedClip] | BaseException | None] = asyncio.Queue(2)
        self.stop = threading.Event()
        self.meta: VideoMeta | None = None
        self.codec: str | None = None
        self.thread = threading.Thread(target=self._run, name="vidmon-video-decode",
                                       daemon=True)

    def _put(self, item: list[TimedClip] | BaseException | None) -> None:
        future = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        while not self.stop.is_set():
            try:
                future.result(timeout=0.5)
                return
            except TimeoutError:
                continue
        future.cancel()

    def _clips(self) -> Iterator[TimedClip]:
        with open_media(location_for_ffmpeg(self.location), self.media.open_timeout_s,
                        self.max_frame_pixels) as container:
            info = media_info(container)
            self.meta = clip_meta(info, self.card.frames * model_frame_interval(
                self.card, self.media.uniform_clip_s))
            self.codec = info.codec
            sampler = ClipSampler(self.card, self.card.frames, frame_converter(self.card),
                                  self.media.uniform_clip_s)
            frames = timed_frames(container, self.max_frame_pixels,
                                  self.media.max_video_seconds)
            for clip in sample_clips(frames, sampler, cover_tail=True):
                if self.stop.is_set():
                    return
                yield clip

    def _run(self) -> None:
        batch: list[TimedClip] = []
        try:
            for clip in self._clips():
                if clip.index < self.skip:
                    continue
                batch.append(clip)
                if len(batch) >= self.media.job_batch_clips:
                    self._put(batch)
                    batch = []
            if batch:
                self._put(batch)
            self._put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the job, which fails
            self._put(exc)


def readable(location: str) -> bool:
    """Whether this replica can read an uploaded job's file: one in the video store always,
    a local one when its folder is this replica's."""
    return is_remote(location) or os.path.isfile(location)


def store_upload(path: Path, job_id: str, media: MediaSettings,
                 objects: ObjectStoreSettings) -> str:
    """Put an upload in ``media.video_store`` (when set; the local file goes) and return
    where the job reads it."""
    if not media.video_store:
        return str(path)
    store = open_store(media.video_store, objects)
    key = f"{job_id}.video"
    store.put_file(key, path)
    path.unlink(missing_ok=True)
    return store.url(key)


def delete_stored(location: str, objects: ObjectStoreSettings | None) -> None:
    """Delete an upload from the video store; a failure is left to the bucket's own
    lifecycle rules."""
    store, key = open_url(location, objects)
    try:
        store.delete(key)
    except Exception:  # noqa: BLE001
        log.warning("could not delete %s from the video store", location)


class _VideoStoreAway(Exception):
    """The video store could not give a job's file: the job is handed back, not failed."""


class VideoJobRunner:
    """Takes waiting jobs from the store while this replica has room, and runs them."""

    def __init__(self, service: PredictionService, jobs: VideoJobRepository,
                 media: MediaSettings, clips_per_video: int, max_frame_pixels: int,
                 holder: str, objects: ObjectStoreSettings | None = None) -> None:
        self.service, self.jobs, self.media = service, jobs, media
        self.objects = objects
        self.clips_per_video, self.max_frame_pixels = clips_per_video, max_frame_pixels
        self.holder = holder
        self.running: dict[str, asyncio.Task[None]] = {}
        self.clips_done = 0  # this replica's, for /metrics

    async def run(self) -> None:
        """Poll for work until cancelled."""
        outage = OutageLog(log, "looking for video jobs")
        while True:
            try:
                while len(self.running) < self.media.max_jobs:
                    job = await asyncio.to_thread(self.jobs.claim, self.holder,
                                                  self.media.lease_s, system_clock(),
                                                  readable)
                    if job is None:
                        break
                    task = asyncio.create_task(self._run_job(job))
                    self.running[job["id"]] = task
                    task.add_done_callback(lambda _, i=job["id"]: self.running.pop(i, None))
                outage.ok()
            except Exception as error:  # the store may be away: look again later
                outage.failed(error)
            await asyncio.sleep(self.media.poll_interval_s)

    async def stop(self) -> None:
        """Stop the jobs running here and give them back, so another replica (or this one
        after a restart) takes them over where they were (or, with the store away, once
        their lease runs out)."""
        held = list(self.running)
        for task in list(self.running.values()):
            task.cancel()
        await asyncio.gather(*self.running.values(), return_exceptions=True)
        for job_id in held:
            try:
                await asyncio.to_thread(self.jobs.release, job_id, self.holder)
            except Exception:  # noqa: BLE001 - the lease runs out instead
                log.warning("could not give video job %s back; its lease runs out", job_id)
            self._copy_path({"id": job_id}).unlink(missing_ok=True)

    async def _run_job(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        log.info("video job %s: starting at clip %d", job_id, job["clips_done"])
        try:
            status, outcome = await self._classify(job)
        except asyncio.CancelledError:
            raise
        except _VideoStoreAway as exc:
            log.warning("video job %s: its file could not be read from the video store "
                        "(%s); handed back to be tried again", job_id, exc)
            await asyncio.sleep(self.media.poll_interval_s)
            await asyncio.to_thread(self.jobs.release, job_id, self.holder)
            return
        except VidmonError as exc:
            status, outcome = "failed", {"error": str(exc)[:500]}
        except Exception as exc:  # noqa: BLE001 - a job's failure must not stop the runner
            log.exception("video job %s failed", job_id)
            status, outcome = "failed", {"error": f"{type(exc).__name__}: {exc}"[:500]}
        finished = await asyncio.to_thread(self.jobs.finish, job_id, self.holder, status,
                                           system_clock(), **outcome)
        if finished and job["uploaded"]:
            await asyncio.to_thread(self._discard, job)
        log.info("video job %s: %s", job_id, status)

    def _copy_path(self, job: dict[str, Any]) -> Path:
        return self.media.video_dir / f"{job['id']}.from-store.video"

    def _local(self, job: dict[str, Any]) -> str:
        """A local path (or URL) to decode: a file in the video store is copied here once."""
        location = job["location"]
        if not (job["uploaded"] and is_remote(location)):
            return location
        path = self._copy_path(job)
        if not path.is_file():
            store, key = open_url(location, self.objects)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".part")
            store.get_file(key, partial)
            partial.replace(path)
        return str(path)

    def _discard(self, job: dict[str, Any]) -> None:
        """A finished job's upload goes, and the local copy of one from the store."""
        location = job["location"]
        if is_remote(location):
            self._copy_path(job).unlink(missing_ok=True)
            delete_stored(location, self.objects)
        else:
            Path(location).unlink(missing_ok=True)

    async def _classify(self, job: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        job_id, done = job["id"], int(job["clips_done"])
        card = self.service.runtime.card
        try:
            location = await asyncio.to_thread(self._local, job)
        except Exception as exc:  # noqa: BLE001 - the store may be away for a while
            raise _VideoStoreAway(str(exc)) from exc
        decoder = _Decoder(location, card, self.media, self.max_frame_pixels, done,
                           asyncio.get_running_loop())
        decoder.thread.start()
        expected = job["clips_expected"]
        runtime = self.service.runtime
        seconds = float(job["seconds_done"])
        try:
            while True:
                item = await decoder.queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                clips = item
                placed = [PlacedClip(derived_prediction_id(job_id, c.index), c.start_s, c.end_s,
                                     None if in_report_sample(c.index, expected,
                                                              self.clips_per_video) else False)
                          for c in clips]
                facts = ClipFacts(decoder.meta, "video/*", job["size_bytes"], decoder.codec)
                runtime, _ = await self._log(np.stack([c.clip for c in clips]), placed,
                                             facts, job_id, job["source_id"])
                done, seconds = clips[-1].index + 1, max(seconds, clips[-1].end_s)
                self.clips_done += len(clips)
                held = await asyncio.to_thread(self.jobs.heartbeat, job_id, self.holder,
                                               system_clock(), clips_done=done,
                                               seconds_done=seconds)
                if not held.held:
                    raise asyncio.CancelledError  # taken over, or finished elsewhere
                if held.cancel:
                    return "cancelled", {"error": "cancelled", "clips_done": done}
        finally:
            decoder.stop.set()
        sums = await asyncio.to_thread(self.jobs.probability_sums, job_id)
        labels = list(runtime.label_names)
        answer = overall_label(labels, [sums.get(label, 0.0) for label in labels])
        if answer is None:
            return "failed", {"error": "the video gave no clip"}
        return "done", {"label": answer[0], "confidence": answer[1], "clips_done": done,
                        "model_name": runtime.name, "model_version": runtime.version}

    async def _log(self, clips: np.ndarray, placed: list[PlacedClip], facts: ClipFacts,
                   job_id: str, source_id: str | None) -> tuple[Any, np.ndarray]:
        """Log a batch, waiting while live traffic fills the model's queue or the log:
        a long job yields to requests instead of failing."""
        delay = 0.05
        while True:
            try:
                return await self.service.log_clips(clips, placed, facts, job_id, source_id)
            except Overloaded:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
