"""Sampled clips on their way to the clip store, which may be away.

A prediction never waits for the clip store, nor fails with it: the clip is encoded and
named by its content (so its record can name it at once) and put in a bounded queue that
one thread uploads from. While the store is away the thread retries the oldest clip with a
growing pause; once the queue is full, new clips are skipped. Both are counted for
``/metrics``. A record may therefore name a clip that never arrived (skipped at shutdown or
lost with its process); retraining already passes over missing clips, as over evicted ones.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from monitor.objects.clips import ClipStore, encode_clip

log = logging.getLogger(__name__)


@dataclass
class KeeperCounts:
    """Clips by what became of them, since the process started."""

    stored: int = 0
    skipped: int = 0   # the queue was full: the record names no clip
    dropped: int = 0   # still queued when the process stopped
    failures: int = 0  # uploads that failed (the clip stays queued and is tried again)


class ClipKeeper:
    """A bounded upload queue in front of a :class:`ClipStore`."""

    def __init__(self, store: ClipStore, capacity: int, max_pause_s: float = 30.0) -> None:
        self.store = store
        self.capacity = capacity
        self.max_pause_s = max_pause_s
        self.counts = KeeperCounts()
        self.available = True
        self._queue: deque[tuple[str, bytes]] = deque()
        self._lock = threading.Condition()
        self._stopping = False
        self._busy = False  # an upload is under way
        self._thread = threading.Thread(target=self._upload, name="vidmon-clip-keeper",
                                        daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Clips waiting for the store."""
        return len(self._queue)

    def keep(self, clip: np.ndarray) -> str | None:
        """Queue ``clip`` for the store and return its key; None when it was skipped."""
        key, data = encode_clip(clip)
        with self._lock:
            if self._stopping or len(self._queue) >= self.capacity:
                self.counts.skipped += 1
                return None
            self._queue.append((key, data))
            self._lock.notify()
        return key

    def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the queue to empty; whether it did."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.05))
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Upload what is queued for up to ``timeout_s``, then stop; the rest is dropped."""
        self.flush(timeout_s)
        with self._lock:
            self._stopping = True
            dropped = len(self._queue)
            self.counts.dropped += dropped
            self._queue.clear()
            self._lock.notify_all()
        # a daemon: an upload stuck on an away store must not hold the shutdown past this
        self._thread.join(timeout=timeout_s)
        if dropped:
            log.warning("%d clips were still waiting for the clip store %s at shutdown and "
                        "are not kept", dropped, self.store.location)

    def _upload(self) -> None:
        pause = 0.5
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                key, data = self._queue[0]
                self._busy = True
            try:
                self.store.put(key, data)
            except Exception as exc:  # noqa: BLE001 - the store is away: try again later
                with self._lock:
                    self._busy = False
                    self.counts.failures += 1
                    if self.available:
                        log.warning("the clip store %s is away (%s); clips wait in a queue "
                                    "of %d", self.store.location, exc, self.capacity)
                    self.available = False
                    self._lock.wait(pause)  # a stop wakes it
                pause = min(pause * 2, self.max_pause_s)
                continue
            with self._lock:
                self._busy = False
                if self._queue and self._queue[0][0] == key:
                    self._queue.popleft()
                self.counts.stored += 1
                if not self.available:
                    log.info("the clip store %s is back", self.store.location)
                self.available = True
                self._lock.notify_all()
            pause = 0.5
