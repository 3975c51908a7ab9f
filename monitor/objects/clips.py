"""Content-addressed clip store: preprocessed clips kept for retraining on production data."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from monitor.objects import ObjectInfo, ObjectStore, open_store

if TYPE_CHECKING:
    from monitor.settings import ObjectStoreSettings, Settings


def encode_clip(clip: np.ndarray) -> tuple[str, bytes]:
    """A clip's key (``<2 hex>/<sha256>.npy``) and bytes: the same clip has the same key."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(clip), allow_pickle=False)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    return f"{digest[:2]}/{digest}.npy", data


class ClipStore:
    """Uint8 clips as ``<2 hex>/<sha256>.npy`` in an object store (a folder or
    ``s3://bucket/prefix``); the same clip is stored once."""

    def __init__(self, location: str | Path | ObjectStore,
                 settings: ObjectStoreSettings | None = None) -> None:
        self.objects = (location if hasattr(location, "pages")
                        else open_store(location, settings))  # type: ignore[arg-type]

    @classmethod
    def of(cls, settings: Settings) -> ClipStore:
        """The settings' clip store."""
        return cls(settings.clip_dir, settings.objects)

    @property
    def location(self) -> str:
        """Where the clips are, for people."""
        return self.objects.location

    def save(self, clip: np.ndarray) -> str:
        """Store ``clip`` and return its key."""
        key, data = encode_clip(clip)
        self.put(key, data)
        return key

    def put(self, key: str, data: bytes) -> None:
        """Store an encoded clip (see :func:`encode_clip`)."""
        self.objects.put(key, data, immutable=True)

    def load(self, key: str) -> np.ndarray:
        """Read a stored clip back; ``FileNotFoundError`` when it is gone."""
        return np.load(io.BytesIO(self.objects.get(key)), allow_pickle=False)

    def buckets(self) -> Iterator[list[ObjectInfo]]:
        """The stored clips a bounded page at a time; half-written temp files included."""
        return self.objects.pages()

    def delete(self, key: str, saved_before: float) -> int:
        """Delete a clip unless it was saved at or after ``saved_before`` (epoch s; a save
        racing the deletion wins, up to the store's own atomicity); the bytes freed."""
        info = self.objects.stat(key)
        if info is None or info.saved_at >= saved_before:
            return 0
        self.objects.delete(key)
        return info.size
