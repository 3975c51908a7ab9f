"""The GPU check's dry run: the same script a lent GPU runs, on the CPU with tiny sizes, so
the prepared run keeps working between the sessions that have a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_runs_every_section_and_writes_its_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--out", str(out), "--dry-run"],
        env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] and summary["errors"] == {}
    assert set(summary["section_seconds"]) == {"tests", "raw", "service", "decode", "memory"}
    tests = summary["tests"]
    assert tests["passed"] and [m["model"] for m in tests["models"]] == [
        "vidmon r2plus1d", "torchscript", "torch.export"]
    assert tests["batcher"]["passes_shared_by_several"] > 0
    assert all(c["drifted_cpu"] == c["drifted_device"]
               for c in tests["embedding_drift"]["cases"])
    assert {r["variant"] for r in summary["raw"]["rows"]} == {"serving",
                                                              "channels_last_input"}
    levels = summary["service"]["levels"]
    assert {(r["path"], r["concurrency"]) for r in levels} == {
        (p, c) for p in ("direct", "http") for c in (1, 2)}
    assert all(r["clips_per_s"] > 0 and r["failures"] == 0 for r in levels)
    assert summary["decode"]["rows"][0]["pyav_fps"] > 0
    assert summary["memory"] == {"skipped": "no CUDA device"}
    assert len(summary["targets"]) == 4  # the raw target needs a GPU's peak
    table = (out / "summary.md").read_text()
    assert "| target | measured | met |" in table and "CUDA tests" in table
