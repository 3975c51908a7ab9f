"""Plain records that cross the store boundary (and the spool file)."""

from __future__ import annotations

import base64
import hashlib
import math
import re
import secrets
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

Source = Literal["production", "reference"]
EMBEDDING_DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}


def as_utc(value: datetime | None) -> datetime | None:
    """Stored timestamps as aware UTC datetimes (SQLite hands them back naive)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None: PostgreSQL's JSON has no NaN (SQLite's
    JSON text accepts it, so only PostgreSQL would refuse the row)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


_ID = re.compile(r"[0-9a-f]{32}")


def _id_check(body: str) -> str:
    return hashlib.blake2b(body.encode("ascii"), digest_size=4,
                           person=b"vidmon-id").hexdigest()


def new_prediction_id() -> str:
    """A fresh prediction id: 24 random hex characters and an 8-character check, so an id
    vidmon never issued (a typo, another system's id) is told apart from one whose row is
    still on its way to the store (see :func:`is_issued_id`)."""
    body = secrets.token_hex(12)
    return body + _id_check(body)


def derived_prediction_id(parent: str, index: int) -> str:
    """The id of clip ``index`` of a long video ``parent``: the same each time, so a job
    taken over after its replica died writes each clip once (stored ids are skipped)."""
    body = hashlib.blake2b(f"{parent}:{index}".encode("ascii"), digest_size=12,
                           person=b"vidmon-clip").hexdigest()
    return body + _id_check(body)


def is_issued_id(value: str) -> bool:
    """Whether ``value`` has the form of an id vidmon issued (its check matches); a random
    string passes with probability 2^-32."""
    return bool(_ID.fullmatch(value)) and _id_check(value[:24]) == value[24:]


def encode_embedding(vector: np.ndarray, dtype: str = "float32") -> bytes:
    """Little-endian float32/float16 bytes, portable across SQLite and PostgreSQL."""
    return np.ascontiguousarray(vector, dtype=EMBEDDING_DTYPES[dtype]).tobytes()


def decode_embedding(data: bytes, dtype: str = "float32") -> np.ndarray:
    """Inverse of :func:`encode_embedding`, as float32."""
    return np.frombuffer(data, dtype=EMBEDDING_DTYPES[dtype]).astype(np.float32)


@dataclass(frozen=True)
class PredictionRecord:
    """One logged prediction (or one reference-profile row)."""

    model_name: str
    model_version: str
    predicted_label: str
    confidence: float
    entropy: float
    probabilities: dict[str, float]
    embedding: bytes
    features: dict[str, float]
    source: Source = "production"
    embedding_dtype: str = "float32"
    content_type: str | None = None
    size_bytes: int | None = None
    codec: str | None = None
    clip_path: str | None = None
    true_label: str | None = None
    id: str = field(default_factory=new_prediction_id)
    video_id: str | None = None  # the upload's id; its clips share it
    source_id: str | None = None  # the camera, stream or client it came from
    clip_start_s: float | None = None  # where in its video or stream the clip lies
    clip_end_s: float | None = None
    in_reports: bool | None = None  # False: a long video's clip its reports leave out
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_row(self) -> dict[str, Any]:
        """Column values for the predictions table (NaN features become NULL)."""
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "features"}
        for name, value in self.features.items():
            row[name] = None if value is None or math.isnan(value) else float(value)
        row["labeled_at"] = self.created_at if self.true_label is not None else None
        return row

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form for the spool file."""
        data = self.to_row()
        data.pop("labeled_at")
        data["embedding"] = base64.b64encode(self.embedding).decode("ascii")
        data["created_at"] = self.created_at.isoformat()
        data["features"] = {k: (None if v is None or math.isnan(v) else v)
                            for k, v in self.features.items()}
        for name in self.features:
            data.pop(name, None)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "PredictionRecord":
        """Inverse of :meth:`to_json`."""
        data = dict(data)
        data["embedding"] = base64.b64decode(data["embedding"])
        data["created_at"] = datetime.fromisoformat(data["created_at"])
        data["features"] = {k: (math.nan if v is None else float(v))
                            for k, v in data["features"].items()}
        return cls(**data)


@dataclass(frozen=True)
class LabeledClip:
    """A labeled production prediction whose preprocessed clip was kept."""

    id: str
    clip_path: str
    true_label: str
    created_at: datetime
    features: dict[str, float | None]
    # The labeling queue's chance of choosing it, when the queue chose it; None for a label
    # that came without the queue.
    inclusion: float | None = None
    # The video the clip was cut from (its upload); the clip's own id for rows logged
    # before videos had ids. Splits keep a video's clips on one side.
    video_id: str | None = None

    @property
    def video(self) -> str:
        """The clip's video, for splits by video."""
        return self.video_id or self.id


@dataclass(frozen=True)
class WindowPopulation:
    """What a whole window holds when a :class:`Window` carries only a sample of it: its
    size and predicted-class counts (SQL aggregates), and every row that has a label or
    that the labeling queue considered (light columns, no embeddings), which is all that
    realized accuracy needs."""

    rows: int
    class_counts: dict[str, int]
    labels: pd.DataFrame

    @property
    def labeled_rows(self) -> int:
        """Rows of the window with a true label."""
        return int(self.labels["true_label"].notna().sum())


@dataclass(frozen=True)
class Window:
    """Rows of one model version and source: scalar columns, and embeddings in row order.
    With ``population``, the rows are a uniform sample of a larger window."""

    frame: pd.DataFrame
    embeddings: np.ndarray
    population: WindowPopulation | None = None

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def total_rows(self) -> int:
        """Rows of the whole window."""
        return len(self) if self.population is None else self.population.rows

    @property
    def sampled(self) -> bool:
        """Whether the frame is a sample of a larger window."""
        return self.total_rows > len(self)


@dataclass(frozen=True)
class FeedbackResult:
    """What a batch of late labels did: stored on their rows, kept until their rows arrive
    (issued ids not in the store yet), or unknown (never issued by vidmon)."""

    stored: list[str]
    unknown_ids: list[str]
    pending_ids: list[str] = field(default_factory=list)
