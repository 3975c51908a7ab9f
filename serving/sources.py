"""Which source a prediction is logged under: the id a client sent while it is admitted,
``other`` beyond ``serve.max_sources`` (see :mod:`monitor.store.sources`)."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.exc import SQLAlchemyError

from monitor.clock import Clock
from monitor.errors import InvalidInput
from monitor.store.sources import OTHER_SOURCE, SourceRepository, valid_source_id

log = logging.getLogger(__name__)


class SourceNames:
    """Admitted source ids, cached; the store is asked only about an id not seen yet while
    fewer than ``most`` are known, so no request rate of new ids costs more than ``most``
    store round trips. With the store away the bound is held on what this replica knows."""

    def __init__(self, repository: SourceRepository, most: int, clock: Clock) -> None:
        self.repository, self.most, self.clock = repository, most, clock
        self.known: set[str] = set()
        self._loaded = False
        self._lock = threading.Lock()

    def logged_as(self, source_id: str | None) -> str | None:
        """The source id to log for a request that named ``source_id`` (blocking: call it
        off the event loop). ``InvalidInput`` for an id that is not a valid name."""
        if source_id is None:
            return None
        if not valid_source_id(source_id):
            raise InvalidInput("source must be 1-64 letters, digits and ._:/-, starting "
                               f"with a letter or digit; got {source_id[:80]!r}")
        with self._lock:
            if source_id in self.known:
                return source_id
            if len(self.known) >= self.most:
                return OTHER_SOURCE
            try:
                if not self._loaded:
                    self.known |= self.repository.admitted()
                    self._loaded = True
                    if source_id in self.known:
                        return source_id
                admitted = self.repository.admit(source_id, self.most, self.clock())
                if not admitted:  # other replicas filled the places: learn them
                    self.known |= self.repository.admitted()
            except SQLAlchemyError as exc:
                log.warning("source %s admitted on this replica's count alone: %s",
                            source_id, exc)
                admitted = len(self.known) < self.most
            if admitted:
                self.known.add(source_id)
                return source_id
            return OTHER_SOURCE
