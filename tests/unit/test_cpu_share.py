"""The model's share of the cores: measured from /proc/stat, applied in the model thread."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from monitor.cpu_share import CoreShare, ThreadBudget, free_threads, read_busy_seconds


@pytest.mark.parametrize(("cores", "others", "threads"), [
    (2, 0.0, 2), (2, 0.4, 2),  # a client waiting on our answers takes part of a core
    (2, 0.8, 1), (2, 1.0, 1), (2, 1.9, 1),  # a training loop takes one; one is always left
    (16, 3.4, 13), (16, 3.8, 12), (1, 3.0, 1), (4, -0.1, 4)])
def test_a_core_counts_as_taken_once_others_use_three_quarters_of_it(
        cores: int, others: float, threads: int) -> None:
    assert free_threads(cores, others) == threads


def test_busy_seconds_sum_the_allowed_cpus_busy_fields_only(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # name user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  999 999 999 999 999 999 999 999 0 0\n"
                    "cpu0 100 10 50 5000 70 1 2 3 40 0\n"
                    "cpu1 200 0 100 9000 0 0 0 0 0 0\n"
                    "cpu2 7 7 7 7 7 7 7 7 7 7\nintr 12345\n")
    tick = os.sysconf("SC_CLK_TCK")
    assert read_busy_seconds([0, 1], stat) == pytest.approx((166 + 300) / tick)
    assert read_busy_seconds([1], stat) == pytest.approx(300 / tick)
    assert read_busy_seconds([0], tmp_path / "missing") is None
    stat.write_text("cpu0 a b c\n")
    assert read_busy_seconds([0], stat) is None


class FakeMachine:
    """Busy and own CPU seconds and a clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = self.busy = self.own = 0.0

    def advance(self, seconds: float, others: float, own: float = 0.0) -> None:
        """``seconds`` pass with other processes on ``others`` cores, this one on ``own``."""
        self.now += seconds
        self.busy += seconds * (others + own)
        self.own += seconds * own

    def share(self, cores: int = 2) -> CoreShare:
        return CoreShare(1.0, cpus=list(range(cores)), busy_seconds=lambda _: self.busy,
                         own_seconds=lambda: self.own, clock=lambda: self.now)


def test_the_share_follows_other_processes_and_not_this_one() -> None:
    machine = FakeMachine()
    share = machine.share()
    assert share.threads_now() == 2  # first look: nothing measured yet
    machine.advance(0.5, others=1.0)
    assert share.threads_now() == 2  # within the interval: the last count
    machine.advance(0.6, others=1.0, own=1.0)
    assert share.threads_now() == 1  # a retrain took a core; our own 2 cores' work is ours
    assert share.others_busy == pytest.approx(1.0)
    machine.advance(1.0, others=0.1, own=2.0)
    assert share.threads_now() == 2  # the retrain ended
    machine.advance(30.0, others=1.0)  # a long pause without forward passes
    assert share.threads_now() == 2  # only starts a new measurement
    machine.advance(1.0, others=1.0)
    assert share.threads_now() == 1


def test_a_busy_process_beside_this_one_takes_a_core_from_the_model() -> None:
    share = CoreShare(1.0)
    if share.cores < 2:
        pytest.skip("one core: the model always keeps it")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # the interpreter is up and spinning
        share.threads_now()
        time.sleep(1.2)  # over one interval, under two
        assert share.threads_now() <= share.cores - 1
        assert share.others_busy >= 0.75
    finally:
        burner.kill()
        burner.wait()


def _in_thread(fn) -> int:
    """``fn()`` then torch's thread count, in a thread of its own (as the model thread)."""
    seen: list[int] = []
    thread = threading.Thread(target=lambda: (fn(), seen.append(torch.get_num_threads())))
    thread.start()
    thread.join()
    return seen[0]


def test_the_budget_sets_torch_threads_fixed_or_from_the_share() -> None:
    before = torch.get_num_threads()
    machine = FakeMachine()
    share = machine.share(cores=3)
    try:
        assert _in_thread(ThreadBudget(1)) == 1
        budget = ThreadBudget(share)
        assert _in_thread(budget) == 3 and budget.threads == 3
        machine.advance(1.0, others=2.0)
        assert _in_thread(budget) == 1 and budget.threads == 1
    finally:
        torch.set_num_threads(before)
