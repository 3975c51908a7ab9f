"""The durable writer: a prediction is answered only once its records are committed to the
store or fsynced to the local spool.

Requests hand their records to :meth:`DurableWriter.write` and wait. One thread takes
everything queued since its last flush and makes it durable in one go (group commit: one
transaction, or one fsync, for all the requests that arrived while the previous flush ran,
optionally lingering ``commit_delay_s`` for more), then releases all their waiters. When
the store refuses, the batch goes to the spool and the writer stays on the spool until a
second thread, the replayer, sees the store answer again (running the migrations first if
the service started without a store) and replays the spool into it, never on the request
path. Labels take the same guarantee through :meth:`DurableWriter.label`.

The queue is bounded in records; a full queue refuses at once (:class:`Overloaded`, a 503)
rather than holding memory.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from monitor.errors import Overloaded
from monitor.store.records import FeedbackResult, PredictionRecord, is_issued_id
from monitor.store.repository import PredictionRepository
from serving.spool import Spool
from serving.threads import settle

log = logging.getLogger(__name__)


@dataclass
class WriterCounters:
    """Running totals, exported as metrics."""

    queued: int = 0
    written: int = 0
    spooled: int = 0
    replayed: int = 0
    rejected: int = 0
    flushes: int = 0
    labels_spooled: int = 0


@dataclass
class _Pending:
    records: Sequence[PredictionRecord]
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


def store_failure(exc: BaseException) -> str:
    """A short cause for logs and readiness, without the statement or parameters."""
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {detail[0][:200] if detail else ''}"


class DurableWriter:
    """Group-commits prediction records to the store, or fsyncs them to the spool."""

    def __init__(
        self,
        repository: PredictionRepository,
        spool: Spool,
        *,
        max_queue: int = 10_000,
        batch_size: int = 512,
        commit_delay_s: float = 0.0,
        replay_interval_s: float = 5.0,
        ensure_store: Callable[[], None] | None = None,
        store_ready: bool = True,
        store_error: str | None = None,
    ) -> None:
        self.repository = repository
        self.spool = spool
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.commit_delay_s = commit_delay_s
        self.replay_interval_s = replay_interval_s
        self.ensure_store = ensure_store or repository.ping
        self.counters = WriterCounters()
        self.store_error = None if store_ready else (store_error or "not reached yet")
        self._store_ok = threading.Event()
        if store_ready:
            self._store_ok.set()
        self._items: deque[_Pending] = deque()
        self._queued_records = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._spool_pending = spool.pending()

    # -- state ------------------------------------------------------------------------

    @property
    def store_available(self) -> bool:
        """Whether writes go to the store (False: to the spool, until a replay succeeds)."""
        return self._store_ok.is_set()

    @property
    def depth(self) -> int:
        """Records waiting in memory for their flush."""
        return self._queued_records

    @property
    def spool_pending(self) -> int:
        """Entries waiting in the spool files."""
        return self._spool_pending

    def has_room(self, n: int = 1) -> bool:
        """Whether ``n`` more records fit in the queue now."""
        return self._queued_records + n <= self.max_queue

    def _count_spooled(self, n: int) -> None:
        with self._cond:
            self._spool_pending = max(0, self._spool_pending + n)

    def _mark_down(self, exc: BaseException) -> None:
        if self._store_ok.is_set():
            log.warning("store unavailable (%s); spooling to %s", store_failure(exc),
                        self.spool.path)
        self.store_error = store_failure(exc)
        self._store_ok.clear()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the flush and replay threads."""
        if self._threads:
            return
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._flush_loop, name="vidmon-writer", daemon=True),
            threading.Thread(target=self._replay_loop, name="vidmon-replay", daemon=True)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Make everything queued durable (store or spool), then stop both threads."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads = []
        while self._items:
            self._flush(self._take(wait=False))

    # -- predictions --------------------------------------------------------------------

    async def write(self, records: Sequence[PredictionRecord]) -> None:
        """Return once ``records`` are committed or fsynced; :class:`Overloaded` when the
        queue is full (nothing is written then)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._cond:
            if not self.has_room(len(records)):
                self.counters.rejected += len(records)
                raise Overloaded("the prediction log is full; retry shortly", retry_after_s=1)
            self._items.append(_Pending(records, future, loop))
            self._queued_records += len(records)
            self.counters.queued += len(records)
            self._cond.notify()
        await asyncio.shield(future)

    def _take(self, wait: bool = True) -> list[_Pending]:
        """Everything queued, up to ``batch_size`` records (a request's records never split);
        waits briefly for the first item, then ``commit_delay_s`` for company."""
        with self._cond:
            if wait and not self._items:
                self._cond.wait(0.1)
            if not self._items:
                return []
        if wait and self.commit_delay_s > 0:
            time.sleep(self.commit_delay_s)
        taken: list[_Pending] = []
        count = 0
        with self._cond:
            while self._items and (not taken or count + len(self._items[0].records)
                                   <= self.batch_size):
                item = self._items.popleft()
                taken.append(item)
                count += len(item.records)
            self._queued_records -= count
        return taken

    def _flush(self, items: list[_Pending]) -> None:
        """Make one group durable and release its waiters."""
        if not items:
            return
        records = [r for item in items for r in item.records]
        error: BaseException | None = None
        durable = False
        if self._store_ok.is_set():
            try:
                self.repository.add_fresh_predictions(records)
                self.counters.written += len(records)
                durable = True
            except SQLAlchemyError as exc:
                self._mark_down(exc)
        if not durable:
            try:
                self.spool.append_records(records)
                self.counters.spooled += len(records)
                self._count_spooled(len(records))
            except OSError as exc:
                log.error("cannot spool %d records: %s", len(records), exc)
                error = Overloaded("neither the store nor the local spool can take the "
                                   "prediction log now; retry shortly", retry_after_s=5)
        self.counters.flushes += 1
        for item in items:
            # A client that went away is not answered; its records are durable all the same.
            item.loop.call_soon_threadsafe(settle, item.future, None, error)

    def _flush_loop(self) -> None:
        while not self._stop.is_set():
            self._flush(self._take())

    # -- labels -------------------------------------------------------------------------

    def label_now(self, labels: Mapping[str, str], labeled_at: datetime) -> FeedbackResult:
        """Store labels (blocking; call from a worker thread): in the store when it answers,
        else fsynced to the spool and reported pending. Ids vidmon never issued are
        unknown either way."""
        if self._store_ok.is_set():
            try:
                return self.repository.apply_feedback(labels, now=labeled_at)
            except SQLAlchemyError as exc:
                self._mark_down(exc)
        issued = {i: label for i, label in labels.items() if is_issued_id(i)}
        if issued:
            try:
                self.spool.append_labels(issued, labeled_at)
            except OSError as exc:
                log.error("cannot spool %d labels: %s", len(issued), exc)
                raise Overloaded("neither the store nor the local spool can take labels "
                                 "now; retry shortly", retry_after_s=5) from None
            self.counters.labels_spooled += len(issued)
            self._count_spooled(len(issued))
        return FeedbackResult(stored=[], pending_ids=list(issued),
                              unknown_ids=[i for i in labels if i not in issued])

    # -- replay -------------------------------------------------------------------------

    def replay_once(self) -> int:
        """Bring the store back into use if it answers, then move the spool into it; returns
        the entries replayed. Runs on the replay thread (tests may call it directly)."""
        if not self._store_ok.is_set():
            try:
                self.ensure_store()
            except Exception as exc:  # noqa: BLE001 - any failure means: still down
                self.store_error = store_failure(exc)
                return 0
            log.info("the store answers again; writing to it")
            self.store_error = None
            self._store_ok.set()  # new requests go to the store while the spool replays
        replayed = 0
        for path in self.spool.seal():
            segment = self.spool.read(path)
            try:
                for start in range(0, len(segment.records), self.batch_size):
                    self.repository.add_predictions(
                        segment.records[start:start + self.batch_size])
                for start in range(0, len(segment.labels), self.batch_size):
                    self.repository.replay_feedback(
                        segment.labels[start:start + self.batch_size])
            except SQLAlchemyError as exc:
                self._mark_down(exc)
                break
            self.spool.remove(path)
            replayed += len(segment)
            self._count_spooled(-len(segment))
        if replayed:
            log.info("replayed %d spooled entries into the store", replayed)
            self.counters.replayed += replayed
        try:
            self.repository.resolve_pending_labels()
        except SQLAlchemyError as exc:
            self._mark_down(exc)
        return replayed

    def _replay_loop(self) -> None:
        while True:
            try:
                self.replay_once()
            except Exception:  # noqa: BLE001 - the replayer must outlive any one failure
                log.exception("spool replay failed; retrying in %.0f s", self.replay_interval_s)
            if self._stop.wait(self.replay_interval_s):
                return
