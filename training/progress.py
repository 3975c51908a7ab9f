"""Progress of long steps in counts: a bar on a terminal, a log line per step otherwise.

A retrain runs with its output in a file (the demo's ``retrain.log``, a container's log),
where tqdm draws nothing; a line every few seconds with the count, the total and the rate
("decoding original training videos: 240/600 videos, 3.1/s") says how far it is and is
what a watcher of the log (the demo) reads as the retrain's heartbeat.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

log = logging.getLogger(__name__)
T = TypeVar("T")


def plural(unit: str) -> str:
    """An English count noun's plural: batch -> batches, video -> videos."""
    return unit + ("es" if unit.endswith(("s", "sh", "ch", "x")) else "s")


def counted(items: Iterable[T], what: str, unit: str, total: int | None = None,
            every_s: float = 10.0) -> Iterator[T]:
    """``items`` with their progress shown: tqdm when stderr is a terminal, else a line at
    the start, at most every ``every_s`` seconds, and at the end."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if sys.stderr.isatty():
        yield from tqdm(items, desc=what, unit=unit, total=total)
        return
    of, units = (f"/{total}" if total is not None else ""), plural(unit)
    started = last = time.monotonic()
    done = 0
    log.info("%s: 0%s %s", what, of, units)
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every_s or done == total:
            log.info("%s: %d%s %s, %.1f/s", what, done, of, units,
                     done / max(now - started, 1e-9))
            last = now
