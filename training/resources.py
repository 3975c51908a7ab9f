"""A retrain's share of the machine: how many threads it computes on, at what priority.

Training beside serving on the same cores is the normal case (the monitor starts retrains
next to the API). Left alone, PyTorch sizes its thread pool to every core, the serving
process does the same, and the two pools oversubscribe the CPU: in the demo on a busy
2-core machine two retrains took 641 s and 437 s against 76 s and 54 s on an idle one,
while serving latency suffered. A retrain therefore runs on a thread budget and at a lower
scheduling priority (nice), both from :class:`monitor.settings.RetrainSettings`; the
serving side steps aside as well (:mod:`monitor.cpu_share`: the model computes on the
cores other processes leave it), since a priority alone does not stop a retrain's core
from stalling every parallel operator of the model's.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)


def default_threads() -> int:
    """Half the cores this process may run on, at least one: serving keeps the rest."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


def limit_process(threads: int | None, nice: int) -> tuple[int, int]:
    """Run this process's tensor work on ``threads`` threads (None: :func:`default_threads`)
    and lower its priority by ``nice``; returns (threads, niceness now)."""
    threads = threads or default_threads()
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only possible before the first parallel work; harmless after
        pass
    niceness = os.nice(nice) if nice else os.nice(0)
    log.info("retrain runs on %d threads at niceness %d", threads, niceness)
    return threads, niceness
