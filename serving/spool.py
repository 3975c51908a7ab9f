"""Append-only spool file for records the database could not take, replayed when it returns.

Each line is one JSON record, flushed and fsynced before ``append`` returns. Replay inserts
through the repository, which skips ids already stored, so a record lands exactly once even
when a replay is interrupted and repeated.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from monitor.store.records import PredictionRecord

log = logging.getLogger(__name__)


class Spool:
    """A JSON-lines file of pending records."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, records: Sequence[PredictionRecord]) -> None:
        """Durably add records to the end of the spool."""
        lines = "".join(json.dumps(r.to_json(), separators=(",", ":")) + "\n" for r in records)
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def pending(self) -> int:
        """Records waiting in the spool."""
        with self._lock:
            if not self.path.exists():
                return 0
            with open(self.path, encoding="utf-8") as handle:
                return sum(1 for line in handle if line.strip())

    def replay(self, write: Callable[[list[PredictionRecord]], int], batch_size: int = 500) -> int:
        """Write every spooled record through ``write``; empty the spool only when all went.

        Returns how many records were replayed. ``write`` raising leaves the spool as it
        was, to be tried again later.
        """
        with self._lock:
            if not self.path.exists() or self.path.stat().st_size == 0:
                return 0
            records = []
            with open(self.path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        records.append(PredictionRecord.from_json(json.loads(line)))
                    except (ValueError, KeyError, TypeError):
                        # Only a crash mid-append leaves a torn last line; it was never
                        # acknowledged as spooled, so skipping it loses nothing promised.
                        log.warning("skipping unreadable spool line %d in %s", number, self.path)
            for start in range(0, len(records), batch_size):
                write(records[start : start + batch_size])
            self.path.unlink()
            return len(records)
