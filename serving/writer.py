"""Background writer: prediction records leave the request path and reach the store in batches.

A bounded queue takes records without waiting; when it is full the caller gets
:class:`Overloaded` (a 503, never a silent drop). One thread drains it in batches; a batch
the database refuses goes to the spool file, which is replayed once the database answers
again. ``stop`` flushes everything that was queued.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from monitor.errors import Overloaded
from monitor.store.records import PredictionRecord
from monitor.store.repository import PredictionRepository
from serving.spool import Spool

log = logging.getLogger(__name__)


@dataclass
class WriterCounters:
    """Running totals, exported as metrics."""

    queued: int = 0
    written: int = 0
    spooled: int = 0
    replayed: int = 0
    rejected: int = 0


class PredictionWriter:
    """Moves records from a bounded in-memory queue to the store (or the spool)."""

    def __init__(
        self,
        repository: PredictionRepository,
        spool: Spool,
        max_queue: int = 10_000,
        batch_size: int = 256,
        flush_interval_s: float = 0.2,
        replay_interval_s: float = 5.0,
        on_change: Callable[[WriterCounters], None] | None = None,
    ) -> None:
        self.repository = repository
        self.spool = spool
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.replay_interval_s = replay_interval_s
        self.counters = WriterCounters()
        self._on_change = on_change
        self._queue: queue.Queue[PredictionRecord] = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._spool_pending = spool.pending()
        self._next_replay = 0.0

    @property
    def depth(self) -> int:
        """Records waiting in memory."""
        return self._queue.qsize()

    @property
    def spool_pending(self) -> int:
        """Records waiting in the spool file."""
        return self._spool_pending

    def start(self) -> None:
        """Start the writer thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="vidmon-writer", daemon=True)
            self._thread.start()

    def submit(self, record: PredictionRecord) -> None:
        """Queue a record without blocking; raise :class:`Overloaded` when the queue is full."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.counters.rejected += 1
            raise Overloaded("the prediction log is full; retry shortly", retry_after_s=1) from None
        self.counters.queued += 1

    def has_room(self, n: int = 1) -> bool:
        """Whether ``n`` more records fit in the queue now."""
        return self._queue.maxsize - self._queue.qsize() >= n

    def wait_flushed(self, timeout_s: float = 5.0) -> bool:
        """Wait until every record queued so far is in the store or the spool."""
        target = self.counters.queued
        deadline = time.monotonic() + timeout_s
        while self.counters.written + self.counters.spooled < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def stop(self, timeout_s: float = 30.0) -> None:
        """Flush every queued record to the store or the spool, then stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._drain_all()

    def _take_batch(self) -> list[PredictionRecord]:
        """Wait for a record, then linger up to the flush interval to fill the batch: one
        transaction per batch instead of one per record (off the request path)."""
        try:
            batch = [self._queue.get(timeout=self.flush_interval_s)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + (0.0 if self._stop.is_set() else self.flush_interval_s)
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=remaining) if remaining > 0
                             else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[PredictionRecord]) -> None:
        try:
            self.repository.add_predictions(batch)
            self.counters.written += len(batch)
        except SQLAlchemyError as exc:
            log.warning("store unavailable (%s); spooling %d records", type(exc).__name__,
                        len(batch))
            self.spool.append(batch)
            self.counters.spooled += len(batch)
            self._spool_pending += len(batch)
            self._next_replay = time.monotonic() + self.replay_interval_s
        if self._on_change:
            self._on_change(self.counters)

    def _replay(self) -> None:
        if not self._spool_pending or time.monotonic() < self._next_replay:
            return
        try:
            replayed = self.spool.replay(self.repository.add_predictions)
        except SQLAlchemyError:
            self._next_replay = time.monotonic() + self.replay_interval_s
            return
        if replayed:
            log.info("replayed %d spooled records into the store", replayed)
        self.counters.replayed += replayed
        self._spool_pending = 0
        if self._on_change:
            self._on_change(self.counters)

    def _drain_all(self) -> None:
        while not self._queue.empty():
            batch = self._take_batch()
            if batch:
                self._write(batch)
        self._next_replay = 0.0
        self._replay()

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._take_batch()
            if batch:
                self._write(batch)
            self._replay()
