"""How many threads the model computes on, serving or training: the cores other processes
leave it.

torch runs each CPU operator as an OpenMP parallel region over all of its threads, and a
region ends only when its slowest thread does. When another process keeps one of the
cores busy (a retrain beside the API, the monitor's report job), one of the model's
threads waits for that core at every operator, hundreds of times a forward pass; a lower
priority for the other process does not help, because the wait is the scheduler's
wake-up latency, paid per operator. Measured on 2 cores with a retrain training on one
thread at nice 10: serving on both cores fell from 171 to 6.3 clips/s (p50 1.6 s), serving
on one thread kept 117 (``bench/retrain_contention_bench.py``).

:class:`CoreShare` looks, at most once an interval, at the CPU time the cores this process
may run on spent busy (``/proc/stat``) less this process's own, and counts a core as taken
once other processes used ``taken_at`` of one (a client waiting on our answers uses a
part of one and is not the problem; a training loop uses all of it). :class:`ThreadBudget`
applies the count in the model thread before each forward pass. Linux only: elsewhere
the model keeps every core it may run on.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

PROC_STAT = Path("/proc/stat")
# /proc/stat's cpuN fields after the name: user nice system idle iowait irq softirq steal
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # steal counts: a core the hypervisor took is not ours


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def free_threads(cores: int, others_busy: float, taken_at: float = 0.75) -> int:
    """Threads for ``cores`` cores of which other processes kept ``others_busy`` cores'
    worth busy: a core counts as taken once their share of it reaches ``taken_at``; at
    least one thread."""
    taken = math.floor(max(others_busy, 0.0) + 1.0 - taken_at + 1e-9)
    return max(1, min(cores, cores - taken))


def read_busy_seconds(cpus: Iterable[int], stat: Path = PROC_STAT) -> float | None:
    """CPU seconds ``cpus`` have spent busy since boot, from ``/proc/stat``; None where
    there is no such file."""
    wanted = {f"cpu{n}" for n in cpus}
    try:
        lines = stat.read_text().splitlines()
        ticks = 0
        for line in lines:
            name, _, rest = line.partition(" ")
            if name in wanted:
                fields = rest.split()
                ticks += sum(int(fields[i]) for i in BUSY_FIELDS if i < len(fields))
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):  # no /proc, or a layout this does not know
        return None


class CoreShare:
    """The threads other processes leave this one, re-measured at most every
    ``interval_s`` seconds over the time since the last look (after a pause of over two
    intervals without forward passes, the next look only starts a new measurement)."""

    def __init__(
        self,
        interval_s: float = 1.0,
        taken_at: float = 0.75,
        *,
        cpus: list[int] | None = None,
        busy_seconds: Callable[[list[int]], float | None] = read_busy_seconds,
        own_seconds: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s, self.taken_at = interval_s, taken_at
        self.cpus = cpus if cpus is not None else allowed_cpus()
        self.cores = len(self.cpus)
        self.threads = self.cores
        self.others_busy = 0.0  # cores' worth other processes used in the last interval
        self._busy_seconds, self._own_seconds, self._clock = busy_seconds, own_seconds, clock
        self._last: tuple[float, float, float] | None = None  # (wall, busy, own) seconds

    def threads_now(self) -> int:
        """The thread count for the next forward pass."""
        now = self._clock()
        if self._last is not None and now - self._last[0] < self.interval_s:
            return self.threads
        busy = self._busy_seconds(self.cpus)
        if busy is None:
            return self.threads
        own = self._own_seconds()
        if self._last is not None and now - self._last[0] <= 2 * self.interval_s:
            wall, last_busy, last_own = self._last
            self.others_busy = max(0.0, (busy - last_busy) - (own - last_own)) / (now - wall)
            self.threads = free_threads(self.cores, self.others_busy, self.taken_at)
        self._last = (now, busy, own)
        return self.threads


class ThreadBudget:
    """Sets torch's intra-op threads for the computing thread: a fixed count, or what a
    :class:`CoreShare` leaves (at most ``most``). Call it in that thread before each forward
    pass or training step (OpenMP's thread count belongs to the thread that sets it)."""

    def __init__(self, source: int | CoreShare, most: int | None = None) -> None:
        self.source, self.most = source, most
        self.threads: int | None = None  # last set, in the computing thread

    def __call__(self) -> None:
        import torch

        share = self.source if isinstance(self.source, CoreShare) else None
        wanted = share.threads_now() if share is not None else int(self.source)
        wanted = min(wanted, self.most) if self.most else wanted
        if wanted != self.threads:
            if self.threads is not None and share is not None:
                log.info("computing on %d threads (other processes used %.2f of %d cores)",
                         wanted, share.others_busy, share.cores)
            torch.set_num_threads(wanted)
            self.threads = wanted
