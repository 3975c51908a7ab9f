"""HTTP routes for long videos (``/v1/videos``) and live streams (``/v1/streams``): thin
adapters over :mod:`serving.videos`, :mod:`serving.streams` and their repositories."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from monitor.api import responses
from monitor.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    Unavailable,
)
from monitor.media.reader import allowed_location
from monitor.media.timeline import ClipAnswer, timeline
from monitor.store.media import StreamRepository, VideoJobRepository
from monitor.store.records import new_prediction_id
from monitor.store.sources import OTHER_SOURCE
from serving.auth import require
from serving.routes import (
    CLIENT,
    LABELER,
    ModelRef,
    SourceField,
    SourceHeader,
    _one_source,
    _service,
)
from serving.streams import default_hop
from serving.videos import delete_stored, probe_video, save_upload, store_upload

router = APIRouter()
JobId = Annotated[str, PathParam(max_length=64)]
ADMIN = [Depends(require("admin"))]


class SegmentOut(BaseModel):
    start_s: float
    end_s: float
    label: str
    mean_confidence: float
    clips: int


class ClipOut(BaseModel):
    prediction_id: str
    start_s: float
    end_s: float
    label: str
    confidence: float
    scores: dict[str, float] | None = None


class VideoJobOut(BaseModel):
    id: str = Field(description="the job's id; also the video id its clips are logged under")
    status: str = Field(description="queued, running, done, failed or cancelled")
    created_at: datetime
    finished_at: datetime | None = None
    filename: str | None = None
    source: str | None = None
    duration_s: float | None = Field(default=None, description="as the file says; None: "
                                                               "it does not say")
    clips_expected: int | None = None
    clips_done: int
    seconds_done: float
    progress: float | None = Field(default=None, description="share of the video "
                                                             "classified, 0-1")
    label: str | None = Field(default=None, description="the video's label: its clips' "
                                                        "mean probabilities")
    confidence: float | None = None
    model: ModelRef | None = None
    error: str | None = None
    timeline: list[SegmentOut] | None = Field(
        default=None, description="runs of clips where the label holds (so far)")
    clips: list[ClipOut] | None = Field(default=None, description="with ?clips=true")

    @classmethod
    def of(cls, row: dict[str, Any], clips: list[dict[str, Any]] | None = None,
           with_clips: bool = False) -> "VideoJobOut":
        progress = None
        if row["status"] == "done":
            progress = 1.0
        elif row["duration_s"]:
            progress = round(min(1.0, row["seconds_done"] / row["duration_s"]), 4)
        model = (ModelRef(name=row["model_name"], version=row["model_version"])
                 if row["model_name"] else None)
        out = cls(id=row["id"], status=row["status"], created_at=row["created_at"],
                  finished_at=row["finished_at"], filename=row["filename"],
                  source=row["source_id"], duration_s=row["duration_s"],
                  clips_expected=row["clips_expected"], clips_done=row["clips_done"],
                  seconds_done=row["seconds_done"], progress=progress, label=row["label"],
                  confidence=row["confidence"], model=model, error=row["error"])
        if clips is not None:
            out.timeline = [SegmentOut(**vars(s)) for s in timeline(
                ClipAnswer(c["clip_start_s"], c["clip_end_s"], c["predicted_label"],
                           c["confidence"]) for c in clips)]
            if with_clips:
                out.clips = [ClipOut(prediction_id=c["id"], start_s=c["clip_start_s"],
                                     end_s=c["clip_end_s"], label=c["predicted_label"],
                                     confidence=c["confidence"],
                                     scores=c.get("probabilities")) for c in clips]
        return out


def _jobs(request: Request) -> VideoJobRepository:
    _service(request)  # not ready: 503
    return request.app.state.video_jobs


async def _admit_job(request: Request) -> None:
    media = request.app.state.settings.media
    active = await run_in_threadpool(_jobs(request).active_count)
    if active >= media.max_queued_jobs:
        raise Overloaded(f"{active} long-video jobs are queued or running (limit "
                         f"{media.max_queued_jobs}, media.max_queued_jobs); retry later",
                         retry_after_s=30)


async def _source(request: Request, source: str | None) -> str | None:
    return await run_in_threadpool(request.app.state.sources.logged_as, source)


async def _save_body(request: Request, path: Path, limit: int) -> int:
    """Stream the request body to ``path`` and fsync it; its size. ``PayloadTooLarge``
    (and no file) past ``limit`` bytes."""
    size, pending = 0, bytearray()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the video is over the limit of {limit} bytes "
                                          "(media.max_video_bytes)")
                pending += chunk
                if len(pending) >= 1024 * 1024:
                    await run_in_threadpool(out.write, bytes(pending))
                    pending.clear()
            await run_in_threadpool(_write_and_sync, out, bytes(pending))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return size


def _write_and_sync(out: BinaryIO, data: bytes) -> None:
    out.write(data)
    out.flush()
    os.fsync(out.fileno())


@router.post("/v1/videos", response_model=VideoJobOut, status_code=202, tags=["videos"],
             response_model_exclude_none=True,
             responses=responses(400, 401, 403, 413, 415, 422, 503), dependencies=CLIENT)
async def submit_video(request: Request,
                       file: Annotated[UploadFile | None, File(
                           description="the video (or send it as the body, or a url)")]
                       = None,
                       url: Annotated[str | None, Form(max_length=2000, description=(
                           "a URL vidmon may read (under media.allowed_urls) instead of a "
                           "file"))] = None,
                       source: SourceField = None,
                       source_header: SourceHeader = None) -> VideoJobOut:
    """Classify a whole video, every clip the card gives, in the background. Answers at
    once (202) with the job; ``GET /v1/videos/{id}`` shows its progress, then its
    timeline. The file is durable before the answer: the job survives a restart."""
    service = _service(request)
    jobs = _jobs(request)
    settings = request.app.state.settings
    media = settings.media
    await _admit_job(request)
    logged_as = await _source(request, _one_source(source, source_header))
    job_id = new_prediction_id()
    path = media.video_dir / f"{job_id}.video"
    content_type = request.headers.get("content-type", "")
    if url is not None and file is not None:
        raise InvalidInput("send a file or a url, not both")
    if url is not None:
        if not allowed_location(url, media.allowed_urls):
            raise InvalidInput(f"vidmon may not read {url[:200]!r}: URLs must lie under "
                               "media.allowed_urls (VIDMON_MEDIA__ALLOWED_URLS)")
        location, uploaded, size, filename = url, False, None, None
    elif file is not None:
        size = await run_in_threadpool(save_upload, file.file, path, media.max_video_bytes)
        location, uploaded, filename = str(path), True, (file.filename or None)
    elif content_type.startswith(("video/", "application/octet-stream")):
        size = await _save_body(request, path, media.max_video_bytes)
        location, uploaded, filename = str(path), True, None
    else:
        raise InvalidInput("send the video as the form field 'file', as the request body "
                           "(Content-Type video/*), or its URL as the form field 'url'")
    try:
        probe = await run_in_threadpool(probe_video, location, service.runtime.card, media,
                                        settings.serve.max_frame_pixels)
        await _admit_job(request)
        if uploaded:
            try:
                location = await run_in_threadpool(store_upload, path, job_id, media,
                                                   settings.objects)
            except Exception as exc:  # the store is away: nothing was accepted
                raise Unavailable(f"the video store {media.video_store} is away ({exc}); "
                                  "try again later", retry_after_s=30) from exc
        row = {"id": job_id, "created_at": service.clock(), "location": location,
               "uploaded": uploaded, "filename": (filename or "")[:300] or None,
               "source_id": logged_as, "size_bytes": size, "duration_s": probe.duration_s,
               "clips_expected": probe.clips_expected}
        await run_in_threadpool(jobs.create, row)
    except BaseException:
        if uploaded:
            path.unlink(missing_ok=True)
            if location != str(path):  # already in the video store
                await run_in_threadpool(delete_stored, location, settings.objects)
        raise
    created = await run_in_threadpool(jobs.get, job_id)
    return VideoJobOut.of(created)


@router.get("/v1/videos/{job_id}", response_model=VideoJobOut, tags=["videos"],
            response_model_exclude_none=True, responses=responses(401, 403, 404, 422, 503),
            dependencies=CLIENT)
async def get_video(request: Request, job_id: JobId,
                    clips: Annotated[bool, Query(description="each clip's span, label and "
                                                             "class scores")] = False
                    ) -> VideoJobOut:
    """A job's progress, and its timeline so far (whole once done)."""
    jobs = _jobs(request)
    row = await run_in_threadpool(jobs.get, job_id)
    if row is None:
        raise NotFound(f"no video job {job_id[:64]!r}")
    rows = await run_in_threadpool(jobs.clips, job_id, clips)
    return VideoJobOut.of(row, rows, clips)


@router.delete("/v1/videos/{job_id}", response_model=VideoJobOut, tags=["videos"],
               response_model_exclude_none=True, responses=responses(401, 403, 404, 422, 503),
               dependencies=CLIENT)
async def cancel_video(request: Request, job_id: JobId) -> VideoJobOut:
    """Cancel a job: a queued one at once, a running one within a batch of clips (the
    clips it logged stay). A finished job is answered as it is."""
    jobs = _jobs(request)
    row = await run_in_threadpool(jobs.cancel, job_id, request.app.state.service.clock())
    if row is None:
        raise NotFound(f"no video job {job_id[:64]!r}")
    return VideoJobOut.of(row)


class SpanLabelIn(BaseModel):
    start_s: float = Field(ge=0)
    end_s: float = Field(gt=0)
    label: str = Field(min_length=1, max_length=100)


class SpanLabelOut(BaseModel):
    labeled_clips: int = Field(description="clips whose middle lies in the span")


@router.post("/v1/videos/{job_id}/labels", response_model=SpanLabelOut, tags=["feedback"],
             responses=responses(400, 401, 403, 404, 409, 413, 422, 503), dependencies=LABELER)
async def label_span(request: Request, job_id: JobId, body: SpanLabelIn) -> SpanLabelOut:
    """The true label of a time span of a long video: every clip whose middle lies in
    [start_s, end_s) gets it (answered once committed)."""
    service = _service(request)
    if body.end_s <= body.start_s:
        raise InvalidInput("end_s must be after start_s")
    if body.label not in service.runtime.label_names:
        raise InvalidInput(f"unknown label {body.label[:100]!r}; the model's labels: "
                           f"{', '.join(service.runtime.label_names)}")
    jobs = _jobs(request)
    if await run_in_threadpool(jobs.get, job_id) is None:
        raise NotFound(f"no video job {job_id[:64]!r}")
    count = await run_in_threadpool(jobs.label_span, job_id, body.start_s, body.end_s,
                                    body.label, service.clock())
    return SpanLabelOut(labeled_clips=count)


class StreamIn(BaseModel):
    url: str = Field(min_length=1, max_length=2000,
                     description="what FFmpeg reads: rtsp://, http(s):// (MPEG-TS, HLS), or "
                                 "file://; under media.allowed_urls")
    source: str = Field(min_length=1, max_length=64,
                        description="the source its predictions are logged under")
    hop: int | None = Field(default=None, ge=1, le=10_000,
                            description="model frames between clips; default media."
                                        "stream_hop or half a clip")


class EventOut(BaseModel):
    at_s: float = Field(description="seconds into the stream (from when it was first read)")
    label: str
    confidence: float
    model_version: str
    created_at: datetime


class StreamOut(BaseModel):
    id: str
    url: str
    source: str
    hop: int
    status: str = Field(description="active or stopped")
    state: str = Field(description="starting, live, reconnecting, dead or stopped")
    created_at: datetime
    last_frame_at: datetime | None = None
    last_error: str | None = None
    events: list[EventOut] | None = None

    @classmethod
    def of(cls, row: dict[str, Any], events: list[dict[str, Any]] | None = None
           ) -> "StreamOut":
        return cls(id=row["id"], url=row["url"], source=row["source_id"], hop=row["hop"],
                   status=row["status"], state=row["state"], created_at=row["created_at"],
                   last_frame_at=row["last_frame_at"], last_error=row["last_error"],
                   events=None if events is None else [EventOut(**e) for e in events])


class StreamsOut(BaseModel):
    streams: list[StreamOut]


def _streams(request: Request) -> StreamRepository:
    _service(request)  # not ready: 503
    return request.app.state.streams


@router.post("/v1/streams", response_model=StreamOut, status_code=201, tags=["streams"],
             response_model_exclude_none=True,
             responses=responses(400, 401, 403, 409, 413, 422, 503), dependencies=ADMIN)
async def add_stream(request: Request, body: StreamIn) -> StreamOut:
    """Start monitoring a live stream: one replica pulls it at the card's frame rate,
    classifies a sliding window and records each change of label."""
    service = _service(request)
    media = request.app.state.settings.media
    if not allowed_location(body.url, media.allowed_urls):
        raise InvalidInput(f"vidmon may not read {body.url[:200]!r}: stream URLs must lie "
                           "under media.allowed_urls (VIDMON_MEDIA__ALLOWED_URLS)")
    streams = _streams(request)
    if len(await run_in_threadpool(streams.active, media.max_streams)) >= media.max_streams:
        raise Conflict(f"{media.max_streams} streams are active (media.max_streams); stop "
                       "one with DELETE /v1/streams/{id} first")
    logged_as = await _source(request, body.source)
    if logged_as == OTHER_SOURCE and body.source != OTHER_SOURCE:
        raise Conflict(f"no room for another source (serve.max_sources); {body.source!r} "
                       "would be logged as 'other'")
    row = {"id": new_prediction_id(), "created_at": service.clock(), "url": body.url,
           "source_id": logged_as,
           "hop": body.hop or default_hop(service.runtime.card, media.stream_hop)}
    await run_in_threadpool(streams.create, row)
    return StreamOut.of(await run_in_threadpool(streams.get, row["id"]))


@router.get("/v1/streams", response_model=StreamsOut, tags=["streams"],
            response_model_exclude_none=True, responses=responses(401, 403, 503),
            dependencies=CLIENT)
async def list_streams(request: Request) -> StreamsOut:
    """The active streams."""
    streams = _streams(request)
    rows = await run_in_threadpool(streams.active, request.app.state.settings.media
                                   .max_streams)
    return StreamsOut(streams=[StreamOut.of(r) for r in rows])


@router.get("/v1/streams/{stream_id}", response_model=StreamOut, tags=["streams"],
            response_model_exclude_none=True, responses=responses(401, 403, 404, 422, 503),
            dependencies=CLIENT)
async def get_stream(request: Request, stream_id: JobId,
                     events: Annotated[int, Query(ge=0, le=1000)] = 100) -> StreamOut:
    """A stream's state and its newest label changes."""
    streams = _streams(request)
    row = await run_in_threadpool(streams.get, stream_id)
    if row is None:
        raise NotFound(f"no stream {stream_id[:64]!r}")
    return StreamOut.of(row, await run_in_threadpool(streams.events, stream_id, events))


@router.delete("/v1/streams/{stream_id}", response_model=StreamOut, tags=["streams"],
               response_model_exclude_none=True, responses=responses(401, 403, 404, 422, 503),
               dependencies=ADMIN)
async def stop_stream(request: Request, stream_id: JobId) -> StreamOut:
    """Stop pulling a stream (within ``media.poll_interval_s``); its events stay."""
    streams = _streams(request)
    row = await run_in_threadpool(streams.stop, stream_id, request.app.state.service.clock())
    if row is None:
        raise NotFound(f"no stream {stream_id[:64]!r}")
    return StreamOut.of(row)
