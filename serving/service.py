"""The prediction core: decode -> batched model and quality features -> records -> writer.

Routes call :class:`PredictionService`; it knows nothing of HTTP. Decoding runs in a thread
pool (PyAV and numpy release the GIL) and cuts a video into the clips its model card asks
for; the clips of one video go through the batcher together, and each is logged as its own
prediction row, linked to the others by the video id, so monitoring sees clip-level
embeddings. The answer for the video is the mean of its clips' probabilities. It is sent
only once the video's records are durable: the writer group-commits them with the records
of concurrent requests (:mod:`serving.writer`).
"""

from __future__ import annotations

import asyncio
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from monitor.clock import Clock, system_clock
from monitor.errors import Overloaded
from monitor.features import VideoMeta, feature_dict
from monitor.profile import entropy
from monitor.runtime import ModelRuntime
from monitor.store.records import PredictionRecord, encode_embedding, new_prediction_id
from monitor.video import DecodeLimits
from serving.batcher import DynamicBatcher
from serving.clip_keeper import ClipKeeper
from serving.decode import DecodedUpload, decode_upload
from serving.swap import ModelHolder
from serving.writer import DurableWriter


@dataclass(frozen=True)
class Upload:
    """One uploaded file."""

    data: bytes
    filename: str | None
    content_type: str | None


@dataclass(frozen=True)
class Prepared:
    """An upload decoded, ready for the model."""

    decoded: DecodedUpload
    decode_ms: float


@dataclass(frozen=True)
class ClipFacts:
    """What is known of the file or stream a clip came from, logged with it."""

    meta: VideoMeta | None
    content_type: str | None
    size_bytes: int | None
    codec: str | None


@dataclass(frozen=True)
class PlacedClip:
    """A clip's id, its place in its video or stream, and whether reports may sample it."""

    id: str
    start_s: float
    end_s: float
    in_reports: bool | None = None


@dataclass(frozen=True)
class SegmentPrediction:
    """The answer for one clip of a video, with the time it spans."""

    prediction_id: str
    label: str
    confidence: float
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Prediction:
    """The answer for one video: the mean of its clips' probabilities. ``prediction_id`` is
    the video id (the one row's id when the video is one clip); feedback for it labels every
    clip."""

    prediction_id: str
    label: str
    confidence: float
    top_k: list[tuple[str, float]]
    model_name: str
    model_version: str
    segments: list[SegmentPrediction]
    timings_ms: dict[str, float] = field(default_factory=dict)
    source: str | None = None  # the source it was logged under


class PredictionService:
    """Answers predictions with the current runtime and logs every one."""

    def __init__(
        self,
        models: ModelHolder,
        batcher: DynamicBatcher,
        writer: DurableWriter | None,
        clip_keeper: ClipKeeper,
        *,
        top_k: int = 3,
        clip_sample_rate: float = 0.0,
        limits: DecodeLimits = DecodeLimits(),
        decode_workers: int = 2,
        clock: Clock = system_clock,
    ) -> None:
        self.models = models
        self.batcher = batcher
        self.writer = writer
        self.clip_keeper = clip_keeper
        self.top_k = top_k
        self.clip_sample_rate = clip_sample_rate
        self.limits = limits
        self.clock = clock
        self._pool = ThreadPoolExecutor(max_workers=decode_workers,
                                        thread_name_prefix="vidmon-decode")
        self._random = random.Random()

    @property
    def runtime(self) -> ModelRuntime:
        """The version serving now."""
        return self.models.runtime

    def close(self) -> None:
        """Stop the decode pool, then hand the clip store what is queued for it (a bounded
        wait)."""
        self._pool.shutdown(wait=True)
        self.clip_keeper.close()

    def _prepare(self, upload: Upload) -> Prepared:
        started = time.perf_counter()
        decoded = decode_upload(upload.data, upload.filename, upload.content_type,
                                self.runtime.card, self.limits)
        return Prepared(decoded, (time.perf_counter() - started) * 1000)

    def _check_capacity(self, n: int) -> None:
        if self.writer is not None and not self.writer.has_room(n):
            raise Overloaded("the prediction log is full; retry shortly", retry_after_s=1)

    async def prepare_all(self, uploads: list[Upload]) -> list[Prepared]:
        """Decode every upload in parallel; any bad one rejects them all."""
        self._check_capacity(len(uploads))
        loop = asyncio.get_running_loop()
        prepared = list(await asyncio.gather(
            *[loop.run_in_executor(self._pool, self._prepare, u) for u in uploads]))
        self._check_capacity(sum(len(p.decoded.video.clips) for p in prepared))
        return prepared

    async def predict(self, prepared: Prepared, source_id: str | None = None) -> Prediction:
        """Run the model on a prepared video's clips, log a record per clip (under
        ``source_id``, the camera or client it came from), answer."""
        started = time.perf_counter()
        video = prepared.decoded.video
        # The batch reports the runtime that computed it: across a hot swap, the rows and
        # the answer name the version that made this prediction.
        probabilities, embeddings, pixels, runtimes = await self.batcher.submit(video.clips)
        inference_ms = (time.perf_counter() - started) * 1000
        runtime: ModelRuntime = runtimes[0]
        labels = runtime.label_names
        video_id = new_prediction_id()
        single = len(video.clips) == 1
        decoded = prepared.decoded
        segments, records = [], []
        for i, segment in enumerate(video.segments):
            record = self._record(runtime, ClipFacts(decoded.video.meta, decoded.content_type,
                                                     decoded.size_bytes, decoded.video.codec),
                                  probabilities[i], embeddings[i], pixels[i],
                                  video_id if single else new_prediction_id(), video_id,
                                  await self._maybe_keep_clip(video.clips[i]), source_id)
            records.append(record)
            segments.append(SegmentPrediction(record.id, record.predicted_label,
                                              record.confidence, round(segment.start_s, 3),
                                              round(segment.end_s, 3)))
        if self.writer is not None:
            logged = time.perf_counter()
            await self.writer.write(records)
            log_ms = (time.perf_counter() - logged) * 1000
        mean = probabilities.mean(axis=0)
        order = np.argsort(mean)[::-1]
        return Prediction(
            prediction_id=video_id,
            source=source_id,
            label=labels[int(order[0])],
            confidence=float(mean[order[0]]),
            top_k=[(labels[int(i)], float(mean[i])) for i in order[: self.top_k]],
            model_name=runtime.name,
            model_version=runtime.version,
            segments=segments,
            timings_ms={"decode": round(prepared.decode_ms, 3),
                        "inference": round(inference_ms, 3),
                        **({"log": round(log_ms, 3)} if self.writer is not None else {})},
        )

    async def log_clips(self, clips: np.ndarray, placed: list[PlacedClip], facts: ClipFacts,
                        video_id: str | None, source_id: str | None
                        ) -> tuple[ModelRuntime, np.ndarray]:
        """Classify clips of a long video or a stream (K, T, H, W, 3) and log each, with its
        place, once durable; the runtime that answered and the probabilities (K, C).
        ``Overloaded`` when the model's queue or the log is full (the caller waits)."""
        self._check_capacity(len(clips))
        probabilities, embeddings, pixels, runtimes = await self.batcher.submit(clips)
        runtime: ModelRuntime = runtimes[0]
        records = [self._record(runtime, facts, probabilities[i], embeddings[i], pixels[i],
                                place.id, video_id, await self._maybe_keep_clip(clips[i]),
                                source_id, place)
                   for i, place in enumerate(placed)]
        if self.writer is not None:
            await self.writer.write(records)
        return runtime, probabilities

    def _record(self, runtime: ModelRuntime, facts: ClipFacts, probabilities: np.ndarray,
                embedding: np.ndarray, pixels: np.ndarray, record_id: str,
                video_id: str | None, clip_path: str | None, source_id: str | None,
                place: PlacedClip | None = None) -> PredictionRecord:
        top = int(np.argmax(probabilities))
        labels = runtime.label_names
        return PredictionRecord(
            id=record_id,
            video_id=video_id,
            source_id=source_id,
            model_name=runtime.name,
            model_version=runtime.version,
            predicted_label=labels[top],
            confidence=float(probabilities[top]),
            entropy=float(entropy(probabilities)),
            probabilities={name: float(p) for name, p in zip(labels, probabilities)},
            embedding=encode_embedding(embedding),
            features=feature_dict(pixels, facts.meta),
            content_type=facts.content_type,
            size_bytes=facts.size_bytes,
            codec=facts.codec,
            clip_path=clip_path,
            clip_start_s=place.start_s if place else None,
            clip_end_s=place.end_s if place else None,
            in_reports=place.in_reports if place else None,
            created_at=self.clock(),
        )

    async def _maybe_keep_clip(self, clip: np.ndarray) -> str | None:
        if self.writer is None or self._random.random() >= self.clip_sample_rate:
            return None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.clip_keeper.keep, clip)

