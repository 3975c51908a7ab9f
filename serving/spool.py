"""The local spool: predictions and labels the store could not take, on disk until it can.

The spool is JSON lines in segments. Appends go to the active file and are flushed and
fsynced before :meth:`Spool.append_records` / :meth:`Spool.append_labels` return, so an
entry in the spool is as durable as a committed row. A replay first *seals* the active file
(renames it to ``<path>.<n>.sealed``), so appends never wait for a replay and a replay never
sees a half-written batch; a sealed segment is removed only after every entry in it is in
the store. Replays insert through the repository, which skips ids already stored, so an
interrupted replay repeated later writes each record once.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from monitor.store.records import PredictionRecord

log = logging.getLogger(__name__)


@dataclass
class Segment:
    """The entries of one sealed segment."""

    path: Path
    records: list[PredictionRecord] = field(default_factory=list)
    labels: list[tuple[dict[str, str], datetime]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records) + sum(len(labels) for labels, _ in self.labels)


class Spool:
    """Segmented, fsynced JSON-lines files of pending records and labels."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _append(self, lines: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
        with self._lock:
            created = not self.path.exists()
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            if created:  # the file's name must survive a power cut as well as its bytes
                _fsync_dir(self.path.parent)

    def append_records(self, records: Sequence[PredictionRecord]) -> None:
        """Durably add prediction records."""
        self._append(r.to_json() for r in records)

    def append_labels(self, labels: Mapping[str, str], labeled_at: datetime) -> None:
        """Durably add labels received at ``labeled_at``."""
        self._append([{"kind": "labels", "labels": dict(labels),
                       "labeled_at": labeled_at.isoformat()}])

    def _segments(self) -> list[Path]:
        def number(p: Path) -> int:
            return int(p.name.rsplit(".", 2)[-2])
        return sorted(self.path.parent.glob(f"{self.path.name}.*.sealed"), key=number)

    def seal(self) -> list[Path]:
        """Close the active file to appends; returns every sealed segment, oldest first."""
        with self._lock:
            segments = self._segments()
            if self.path.exists() and self.path.stat().st_size:
                last = int(segments[-1].name.rsplit(".", 2)[-2]) if segments else 0
                sealed = self.path.with_name(f"{self.path.name}.{last + 1}.sealed")
                os.replace(self.path, sealed)
                _fsync_dir(self.path.parent)
                segments.append(sealed)
            return segments

    def read(self, segment: Path) -> Segment:
        """The entries of a sealed segment."""
        result = Segment(segment)
        with open(segment, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    if entry.get("kind") == "labels":
                        result.labels.append((dict(entry["labels"]),
                                              datetime.fromisoformat(entry["labeled_at"])))
                    else:
                        result.records.append(PredictionRecord.from_json(entry))
                except (ValueError, KeyError, TypeError, AttributeError):
                    # Only a crash mid-append leaves a torn last line; its batch was never
                    # acknowledged, so skipping it loses nothing promised.
                    log.warning("skipping unreadable spool line %d in %s", number, segment)
        return result

    def remove(self, segment: Path) -> None:
        """Forget a segment whose entries are all in the store."""
        segment.unlink(missing_ok=True)

    def pending(self) -> int:
        """Entries waiting in the spool (records, and labels counted one by one)."""
        with self._lock:
            files = [*self._segments(), *([self.path] if self.path.exists() else [])]
        total = 0
        for path in files:
            total += len(self.read(path))
        return total


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
