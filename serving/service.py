"""The prediction core: decode -> batched model and quality features -> record -> writer.

Routes call :class:`PredictionService`; it knows nothing of HTTP. Decoding runs in a thread
pool (PyAV and numpy release the GIL); the model and the pixel quality features run batched
in the batcher's step, on the model's device; the store write goes to the background
writer, never awaited by the request.
"""

from __future__ import annotations

import asyncio
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from monitor.clips import ClipStore
from monitor.clock import Clock, system_clock
from monitor.errors import Overloaded
from monitor.features import feature_dict
from monitor.profile import entropy
from monitor.store.records import PredictionRecord, encode_embedding
from serving.batcher import DynamicBatcher
from serving.decode import DecodedClip, decode_upload
from serving.runtime import ModelRuntime
from serving.swap import ModelHolder
from serving.writer import PredictionWriter


@dataclass(frozen=True)
class Upload:
    """One uploaded file."""

    data: bytes
    filename: str | None
    content_type: str | None


@dataclass(frozen=True)
class Prepared:
    """An upload decoded, ready for the model."""

    decoded: DecodedClip
    decode_ms: float


@dataclass(frozen=True)
class Prediction:
    """The answer for one clip."""

    prediction_id: str
    label: str
    confidence: float
    top_k: list[tuple[str, float]]
    model_name: str
    model_version: str
    timings_ms: dict[str, float] = field(default_factory=dict)


class PredictionService:
    """Answers predictions with the current runtime and logs every one."""

    def __init__(
        self,
        models: ModelHolder,
        batcher: DynamicBatcher,
        writer: PredictionWriter | None,
        clip_store: ClipStore,
        *,
        top_k: int = 3,
        clip_sample_rate: float = 0.0,
        max_video_frames: int = 2000,
        decode_workers: int = 2,
        clock: Clock = system_clock,
    ) -> None:
        self.models = models
        self.batcher = batcher
        self.writer = writer
        self.clip_store = clip_store
        self.top_k = top_k
        self.clip_sample_rate = clip_sample_rate
        self.max_video_frames = max_video_frames
        self.clock = clock
        self._pool = ThreadPoolExecutor(max_workers=decode_workers,
                                        thread_name_prefix="vidmon-decode")
        self._random = random.Random()

    @property
    def runtime(self) -> ModelRuntime:
        """The version serving now."""
        return self.models.runtime

    def close(self) -> None:
        """Stop the decode pool."""
        self._pool.shutdown(wait=True)

    def _prepare(self, upload: Upload) -> Prepared:
        started = time.perf_counter()
        decoded = decode_upload(upload.data, upload.filename, upload.content_type,
                                self.runtime.input_size, self.max_video_frames)
        return Prepared(decoded, (time.perf_counter() - started) * 1000)

    def _check_capacity(self, n: int) -> None:
        if self.writer is not None and not self.writer.has_room(n):
            raise Overloaded("the prediction log is full; retry shortly", retry_after_s=1)

    async def prepare_all(self, uploads: list[Upload]) -> list[Prepared]:
        """Decode every upload in parallel; any bad one rejects them all."""
        self._check_capacity(len(uploads))
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(
            *[loop.run_in_executor(self._pool, self._prepare, u) for u in uploads]))

    async def predict(self, prepared: Prepared) -> Prediction:
        """Run the model on a prepared clip, log the record, return the answer."""
        started = time.perf_counter()
        # The batch reports the runtime that computed it: across a hot swap, the row and
        # the answer name the version that made this prediction.
        probabilities, embedding, pixels, runtime = await self.batcher.submit(
            prepared.decoded.clip)
        inference_ms = (time.perf_counter() - started) * 1000
        order = np.argsort(probabilities)[::-1]
        labels = runtime.label_names
        record = PredictionRecord(
            model_name=runtime.name,
            model_version=runtime.version,
            predicted_label=labels[int(order[0])],
            confidence=float(probabilities[order[0]]),
            entropy=float(entropy(probabilities)),
            probabilities={name: float(p) for name, p in zip(labels, probabilities)},
            embedding=encode_embedding(embedding),
            features=feature_dict(pixels, prepared.decoded.meta),
            content_type=prepared.decoded.content_type,
            size_bytes=prepared.decoded.size_bytes,
            codec=prepared.decoded.codec,
            clip_path=await self._maybe_keep_clip(prepared.decoded.clip),
            created_at=self.clock(),
        )
        if self.writer is not None:
            self.writer.submit(record)
        return Prediction(
            prediction_id=record.id,
            label=record.predicted_label,
            confidence=record.confidence,
            top_k=[(labels[int(i)], float(probabilities[i])) for i in order[: self.top_k]],
            model_name=runtime.name,
            model_version=runtime.version,
            timings_ms={"decode": round(prepared.decode_ms, 3),
                        "inference": round(inference_ms, 3)},
        )

    async def _maybe_keep_clip(self, clip: np.ndarray) -> str | None:
        if self.writer is None or self._random.random() >= self.clip_sample_rate:
            return None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.clip_store.save, clip)

