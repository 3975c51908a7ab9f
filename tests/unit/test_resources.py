"""A retrain's thread budget and priority."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from monitor.settings import Settings
from training.resources import default_threads


def _run(code: str, env: dict[str, str] | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True, env={**os.environ, **(env or {})})
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_retrain_process_takes_its_thread_budget_and_a_lower_priority() -> None:
    # in a child process: lowering the test process's own priority could not be undone
    result = _run(
        "import json, os, torch\n"
        "from monitor.settings import Settings\n"
        "from training.resources import limit_process\n"
        "before = os.nice(0)\n"
        "r = Settings().retrain\n"
        "threads, nice = limit_process(r.threads, r.nice)\n"
        "print(json.dumps({'before': before, 'threads': threads, 'torch': torch.get_num_threads(),"
        " 'nice': nice}))\n",
        env={"VIDMON_RETRAIN__THREADS": "1", "VIDMON_RETRAIN__NICE": "7"})
    assert result["threads"] == result["torch"] == 1
    assert result["nice"] == min(result["before"] + 7, 19)


def test_by_default_a_retrain_leaves_serving_half_the_cores() -> None:
    settings = Settings().retrain
    assert settings.threads is None and settings.nice == 10
    cores = len(os.sched_getaffinity(0))
    assert default_threads() == max(1, cores // 2)
