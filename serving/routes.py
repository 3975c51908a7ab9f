"""HTTP routes: thin adapters between requests and the prediction core."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from monitor.api import responses
from monitor.errors import InvalidInput, NotReady, PayloadTooLarge
from serving.auth import require
from serving.metrics import CONTENT_TYPE_LATEST
from serving.service import Prediction, PredictionService, Upload

router = APIRouter()


class LabelScore(BaseModel):
    label: str
    probability: float


class ModelRef(BaseModel):
    name: str
    version: str


class SegmentOut(BaseModel):
    prediction_id: str
    label: str
    confidence: float
    start_s: float
    end_s: float


class PredictionOut(BaseModel):
    prediction_id: str = Field(description="the video's id; feedback for it labels every clip")
    label: str
    confidence: float
    top_k: list[LabelScore]
    model: ModelRef
    clips: int = Field(description="clips the video was classified as (mean probabilities)")
    segments: list[SegmentOut] | None = Field(
        default=None, description="each clip's answer and time span, with ?segments=true")
    source: str | None = Field(
        default=None, description="the source it was logged under: the one sent, or "
                                  "'other' beyond serve.max_sources")
    timings_ms: dict[str, float]

    @classmethod
    def of(cls, p: Prediction, total_ms: float, segments: bool) -> "PredictionOut":
        return cls(
            prediction_id=p.prediction_id, label=p.label, confidence=p.confidence,
            top_k=[LabelScore(label=label, probability=prob) for label, prob in p.top_k],
            model=ModelRef(name=p.model_name, version=p.model_version), clips=len(p.segments),
            segments=[SegmentOut(**vars(s)) for s in p.segments] if segments else None,
            source=p.source,
            timings_ms={**p.timings_ms, "total": round(total_ms, 3)})


class BatchOut(BaseModel):
    predictions: list[PredictionOut]


class FeedbackItem(BaseModel):
    prediction_id: str = Field(min_length=1, max_length=64)
    label: str = Field(min_length=1, max_length=100)


class FeedbackIn(BaseModel):
    labels: list[FeedbackItem] = Field(min_length=1, max_length=10_000)


class FeedbackOut(BaseModel):
    stored: list[str] = Field(description="labels set on their stored predictions")
    pending_ids: list[str] = Field(
        default_factory=list,
        description="ids vidmon issued whose rows are not in the store yet (spooled by a "
                    "replica while the store was away): kept, and applied when they land")
    unknown_ids: list[str] = Field(description="ids vidmon never issued")
    unknown_labels: list[FeedbackItem]


class ReadyOut(BaseModel):
    status: str = Field(description="ready, or degraded while predictions go to the spool")
    model: str
    version: str
    store: str = Field(description="ok, or why the store is not in use")
    spooled: int = Field(description="entries waiting in this replica's spool")


def _service(request: Request) -> PredictionService:
    if not getattr(request.app.state, "ready", False):
        raise NotReady("the model is not loaded yet")
    return request.app.state.service


async def _read(upload: UploadFile, limit: int) -> Upload:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        name = (upload.filename or "the upload")[:100]
        raise PayloadTooLarge(f"{name} is over the limit of {limit} bytes (max_upload_bytes)")
    return Upload(data, upload.filename, upload.content_type)


async def _predict(request: Request, files: list[UploadFile], segments: bool,
                   source: str | None) -> list[PredictionOut]:
    started = time.perf_counter()
    _service(request)  # not ready: 503 before reading the files
    serve = request.app.state.settings.serve
    if len(files) > serve.max_files_per_request:
        raise InvalidInput(f"at most {serve.max_files_per_request} files per request")
    uploads = [await _read(f, serve.max_upload_bytes) for f in files]
    return await _predict_uploads(request, uploads, segments, source, started)


async def _predict_uploads(request: Request, uploads: list[Upload], segments: bool,
                           source: str | None, started: float | None = None
                           ) -> list[PredictionOut]:
    started = started or time.perf_counter()
    service = _service(request)
    logged_as = await run_in_threadpool(request.app.state.sources.logged_as, source)
    prepared = await service.prepare_all(uploads)
    results = await asyncio.gather(*[service.predict(p, logged_as) for p in prepared])
    total_ms = (time.perf_counter() - started) * 1000
    return [PredictionOut.of(r, total_ms, segments) for r in results]


Segments = Annotated[bool, Query(description="include each clip's label, confidence and "
                                             "start/end time")]
_SOURCE_HELP = ("the camera, stream or client the video came from (1-64 letters, digits and "
                "._:/-): reports test drift per source; the header X-Vidmon-Source says the "
                "same for a raw body")
SourceHeader = Annotated[str | None, Header(alias="X-Vidmon-Source", max_length=64,
                                            description=_SOURCE_HELP)]
SourceField = Annotated[str | None, Form(max_length=64, description=_SOURCE_HELP)]


def _one_source(form: str | None, header: str | None) -> str | None:
    """The request's source, from the form field or the header (they must agree)."""
    if form is not None and header is not None and form != header:
        raise InvalidInput(f"the form's source {form[:80]!r} and the X-Vidmon-Source header "
                           f"{header[:80]!r} disagree")
    return form if form is not None else header


PREDICT_ERRORS = responses(400, 401, 403, 413, 415, 422, 503, 504)
CLIENT = [Depends(require("client"))]
LABELER = [Depends(require("labeler"))]


_BINARY = {"schema": {"type": "string", "format": "binary"}}
# The file may also be the request body itself, with its own Content-Type.
RAW_BODY = {"requestBody": {"content": {"application/x-npy": _BINARY, "video/*": _BINARY,
                                        "image/gif": _BINARY}}}


async def _read_body(request: Request, limit: int) -> Upload:
    """The request body as the upload (its size is held to ``limit`` while it streams)."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(f"the upload is over the limit of {limit} bytes "
                                  "(max_upload_bytes)")
    return Upload(bytes(data), None, request.headers.get("content-type"))


@router.post("/v1/predict", response_model=PredictionOut, response_model_exclude_none=True,
             tags=["predict"], responses=PREDICT_ERRORS, openapi_extra=RAW_BODY,
             dependencies=CLIENT)
async def predict(request: Request,
                  file: Annotated[UploadFile | None, File(description="the video or clip")]
                  = None,
                  source: SourceField = None,
                  source_header: SourceHeader = None,
                  segments: Segments = False) -> PredictionOut:
    """Classify one video file (mp4, webm, avi, mkv, mov, gif...) or raw uint8 ``.npy`` clip.
    A video longer than one clip of the model is classified as several clips.

    Send the file as the multipart form field ``file``, or as the request body itself with
    its own ``Content-Type`` (``application/x-npy``, ``video/mp4``, ...): the raw body skips
    multipart parsing, the cheaper path for high request rates."""
    if file is None:
        _service(request)
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            raise InvalidInput("the form has no file in the field 'file'")
        upload = await _read_body(request, request.app.state.settings.serve.max_upload_bytes)
        return (await _predict_uploads(request, [upload], segments,
                                       _one_source(source, source_header)))[0]
    return (await _predict(request, [file], segments, _one_source(source, source_header)))[0]


@router.post("/v1/predict/batch", response_model=BatchOut, response_model_exclude_none=True,
             tags=["predict"], responses=PREDICT_ERRORS, dependencies=CLIENT)
async def predict_batch(request: Request, files: Annotated[list[UploadFile], File()],
                        source: SourceField = None,
                        source_header: SourceHeader = None,
                        segments: Segments = False) -> BatchOut:
    """Classify several files in one request; one bad file rejects the request whole."""
    return BatchOut(predictions=await _predict(request, files, segments,
                                               _one_source(source, source_header)))


@router.post("/v1/feedback", response_model=FeedbackOut, tags=["feedback"],
             responses=responses(400, 401, 403, 413, 422, 503), dependencies=LABELER)
async def feedback(request: Request, body: FeedbackIn) -> FeedbackOut:
    """Ground-truth labels for earlier predictions (a video id labels all its clips);
    idempotent. Answered once the labels are committed to the store or fsynced to the
    spool."""
    service = _service(request)
    known_labels = set(service.runtime.label_names)
    valid = {item.prediction_id: item.label for item in body.labels if item.label in known_labels}
    unknown_labels = [item for item in body.labels if item.label not in known_labels]
    writer = request.app.state.writer
    now = service.clock()
    if writer is not None:
        result = await run_in_threadpool(writer.label_now, valid, now)
    else:  # logging off (benchmarks): straight to the store
        result = await run_in_threadpool(request.app.state.repository.apply_feedback, valid,
                                         now)
    return FeedbackOut(stored=result.stored, pending_ids=result.pending_ids,
                       unknown_ids=result.unknown_ids, unknown_labels=unknown_labels)


@router.get("/healthz", tags=["operations"])
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyOut, tags=["operations"], responses=responses(503))
def readyz(request: Request) -> ReadyOut:
    """The model is loaded. With the store away the service still answers and spools its
    log: ``degraded``, with the reason, until a replay brings the store back into use."""
    service = _service(request)
    writer = request.app.state.writer
    if writer is None:
        store = "ok"
    else:
        store = "ok" if writer.store_available else f"unavailable ({writer.store_error}); " \
            f"predictions and labels are spooled to {writer.spool.path}"
    return ReadyOut(status="ready" if store == "ok" else "degraded",
                    model=service.runtime.name, version=service.runtime.version, store=store,
                    spooled=writer.spool_pending if writer is not None else 0)


@router.get("/metrics", tags=["operations"], response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}},
                             "description": "Prometheus text exposition"}})
def metrics(request: Request) -> Response:
    """Prometheus metrics: the service's own, and the monitoring gauges of each model
    version's latest report, read from the store."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


class QueueItemOut(BaseModel):
    prediction_id: str = Field(description="label it with POST /v1/feedback")
    video_id: str | None = Field(description="the video the clip came from")
    created_at: datetime
    predicted_label: str
    clip_path: str | None = Field(description="the kept clip, when clips are kept")
    estimated_error: float = Field(description="its estimated chance of being wrong")
    inclusion_probability: float = Field(
        description="the chance it had of being chosen; the report weighs its label by the "
                    "inverse")


class QueueOut(BaseModel):
    model: ModelRef
    items: list[QueueItemOut]


@router.get("/v1/labeling/queue", response_model=QueueOut, tags=["feedback"],
            responses=responses(401, 403, 409, 422, 503), dependencies=LABELER)
async def labeling_queue(request: Request,
                         limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> QueueOut:
    """Up to ``limit`` predictions of the window now filling to label next, chosen by
    importance sampling on their estimated error with a uniform floor (active testing);
    none is handed out twice. Their labels go to POST /v1/feedback as any others."""
    runtime = _service(request).runtime
    rows = await run_in_threadpool(request.app.state.labeling.next, runtime.name,
                                   runtime.version, limit)
    return QueueOut(model=ModelRef(name=runtime.name, version=runtime.version), items=[
        QueueItemOut(prediction_id=r.prediction_id, video_id=r.video_id,
                     created_at=r.created_at, predicted_label=r.predicted_label,
                     clip_path=r.clip_path, estimated_error=r.p_wrong,
                     inclusion_probability=r.inclusion) for r in rows])
