"""Content-addressed clip store: preprocessed clips kept for retraining on production data."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ClipFile:
    """One stored clip: its path relative to the root, size and last save (epoch s)."""

    relative: str
    size: int
    saved_at: float


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
        try:
            os.utime(target)  # saved again: retention's grace period starts over
        except FileNotFoundError:
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

    def buckets(self) -> Iterator[list[ClipFile]]:
        """The stored files, one list per two-hex-digit folder (a bounded share of the
        store at a time); half-written ``.tmp`` files included."""
        if not self.root.is_dir():
            return
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            files = []
            for entry in os.scandir(folder):
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted while listed
                if entry.is_file(follow_symlinks=False):
                    files.append(ClipFile(f"{folder.name}/{entry.name}", stat.st_size,
                                          stat.st_mtime))
            yield files

    def delete(self, relative: str, saved_before: float) -> int:
        """Delete a clip unless it was saved at or after ``saved_before`` (epoch s; a save
        racing the deletion wins); the bytes freed."""
        path = self.root / relative
        try:
            stat = path.stat()
            if stat.st_mtime >= saved_before:
                return 0
            path.unlink()
        except FileNotFoundError:
            return 0
        return stat.st_size
