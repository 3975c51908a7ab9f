"""Content-addressed clip store: preprocessed clips kept for retraining on production data."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np


class ClipStore:
    """Saves uint8 clips as ``<root>/<2 hex>/<sha256>.npy``; the same clip is stored once."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def save(self, clip: np.ndarray) -> str:
        """Store ``clip`` and return its path relative to the root."""
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(clip), allow_pickle=False)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        relative = f"{digest[:2]}/{digest}.npy"
        target = self.root / relative
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(data)
            partial.replace(target)  # atomic: readers never see half a clip
        return relative

    def load(self, relative: str) -> np.ndarray:
        """Read a stored clip back."""
        path = (self.root / relative).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"{relative!r} is outside the clip store")
        return np.load(path, allow_pickle=False)
