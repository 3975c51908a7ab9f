"""Deleting a million expired predictions while the writer keeps committing.

Stores N production predictions of one model version (128-d embeddings, a quarter
labeled, one in twenty with a kept clip file), a report that covers them, and moves the
clock 31 days past them. A writer thread then commits groups of fresh predictions at a
steady rate, as the service's durable writer does; after a baseline, ``vidmon gc``'s
collector deletes the expired rows in batches beside it. Printed: rows deleted per second,
clip files freed, and the writer's commit latency (p50, p99, max) before and during the
deletion, with the ratio of the p99s: the deletion blocks the writer if that ratio is far
above 1.

Usage: python bench/retention_bench.py [--rows 1000000] [--batch-rows 5000] [--skip-sqlite]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_bench import CHUNK, END, POSTGRES, production  # noqa: E402

from monitor.objects.clips import ClipStore  # noqa: E402
from monitor.report import build_report  # noqa: E402
from monitor.retention import GarbageCollector  # noqa: E402
from monitor.settings import RetentionSettings  # noqa: E402
from monitor.store import PredictionRepository, create_store_engine, upgrade_database  # noqa: E402
from monitor.store.reports import ReportRepository  # noqa: E402
from monitor.store.retention import RetentionRepository  # noqa: E402

NOW = END + timedelta(days=31)
CLIP_EVERY = 20


def fill(repository: PredictionRepository, clips: Path, n: int) -> float:
    """N expired predictions, every CLIP_EVERY-th with a clip file; seconds taken."""
    started = time.perf_counter()
    for start in range(0, n, CHUNK):
        records = production(start, min(CHUNK, n - start), n)
        for i in range(0, len(records), CLIP_EVERY):
            digest = uuid.uuid4().hex * 2
            relative = f"{digest[:2]}/{digest}.npy"
            (clips / relative).parent.mkdir(parents=True, exist_ok=True)
            (clips / relative).write_bytes(b"\0" * 1024)
            records[i] = replace(records[i], clip_path=relative)
        repository.add_predictions(records)
        print(f"  stored {min(start + CHUNK, n):,}/{n:,}", end="\r", file=sys.stderr,
              flush=True)
    print(" " * 40, end="\r", file=sys.stderr, flush=True)
    old = time.time() - 86_400
    for path in clips.rglob("*.npy"):
        os.utime(path, (old, old))
    empty = repository.load_window("bench", "1", since=END, until=END)
    report = build_report(empty, empty, ("a",), model_name="bench", model_version="1",
                          window_start=END - timedelta(hours=1), window_end=END)
    ReportRepository(repository.engine).save(report, now=END)
    if repository.engine.dialect.name == "postgresql":
        with repository.engine.connect() as connection:  # as autovacuum would after a load
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                sa.text("ANALYZE predictions"))
    return time.perf_counter() - started


class Writer(threading.Thread):
    """Commits ``group`` fresh predictions every ``period_s``, timing each commit."""

    def __init__(self, repository: PredictionRepository, group: int, period_s: float) -> None:
        super().__init__(daemon=True)
        self.repository, self.group, self.period_s = repository, group, period_s
        self.latencies: list[tuple[float, float]] = []  # (start, seconds)
        self.stop_event = threading.Event()

    def run(self) -> None:
        made = 0
        next_at = time.perf_counter()
        while not self.stop_event.is_set():
            records = [replace(r, created_at=NOW, model_version="2")
                       for r in production(10_000_000 + made, self.group, self.group)]
            made += self.group
            started = time.perf_counter()
            self.repository.add_predictions(records)
            self.latencies.append((started, time.perf_counter() - started))
            next_at += self.period_s
            time.sleep(max(0.0, next_at - time.perf_counter()))

    def between(self, start: float, end: float) -> np.ndarray:
        """Commit latencies (ms) of commits that started in [start, end)."""
        return np.array([s * 1000 for t, s in self.latencies if start <= t < end])


def _stats(ms: np.ndarray, seconds: float) -> str:
    return (f"{len(ms):5d} commits ({len(ms) / seconds:4.1f}/s), p50 "
            f"{np.percentile(ms, 50):6.1f} ms, p99 {np.percentile(ms, 99):7.1f} ms, max "
            f"{ms.max():7.1f} ms")


def run_case(name: str, url: str, rows: int, batch_rows: int, baseline_s: float,
             group: int, period_s: float) -> None:
    engine = create_store_engine(url)
    upgrade_database(engine)
    repository = PredictionRepository(engine)
    clips = Path(tempfile.mkdtemp(prefix="vidmon-retention-bench-clips-"))
    filled = fill(repository, clips, rows)
    writer = Writer(repository, group, period_s)
    collector = GarbageCollector(
        RetentionSettings(prediction_days=30, labeled_days=30, clip_days=None,
                          clip_max_mb=None, report_days=None, batch_rows=batch_rows),
        RetentionRepository(engine), ReportRepository(engine), ClipStore(clips),
        max_attempts=3, clock=lambda: NOW, progress=lambda line: print(
            f"  {line}", end="\r", file=sys.stderr, flush=True))
    writer.start()
    began = time.perf_counter()
    time.sleep(baseline_s)
    started = time.perf_counter()
    result = collector.run()
    finished = time.perf_counter()
    time.sleep(1.0)
    writer.stop_event.set()
    writer.join()
    print(" " * 100, end="\r", file=sys.stderr, flush=True)
    seconds = finished - started
    before = writer.between(0, started)
    during = writer.between(started, finished)
    print(f"{name}: deleted {result.predictions_deleted:,} of {rows:,} rows in {seconds:.1f} s "
          f"({result.predictions_deleted / seconds:,.0f} rows/s, batches of {batch_rows:,}), "
          f"{result.clip_files_deleted:,} clip files freed; storing took {filled:.0f} s")
    print(f"  writer ({group} predictions every {period_s * 1000:.0f} ms) before: "
          f"{_stats(before, started - began)}")
    print(f"  writer during the deletion:          {_stats(during, seconds)}")
    print(f"  p99 during / before: {np.percentile(during, 99) / np.percentile(before, 99):.2f}"
          f"; rows left: {repository.count(model_version='1'):,} expired, "
          f"{repository.count(model_version='2'):,} written meanwhile", flush=True)
    engine.dispose()
    shutil.rmtree(clips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, nargs="+", default=[5000])
    parser.add_argument("--baseline-s", type=float, default=10.0)
    parser.add_argument("--group", type=int, default=10,
                        help="predictions per writer commit")
    parser.add_argument("--period-ms", type=float, default=33.0,
                        help="time between writer commits (10 every 33 ms: 300/s)")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="vidmon-retention-bench-"))
    admin = None if args.skip_postgres else sa.create_engine(POSTGRES)
    for batch_rows in args.batch_rows:
        if not args.skip_postgres:
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            with admin.begin() as connection:
                connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            try:
                run_case("PostgreSQL", f"{POSTGRES}?options=-csearch_path%3D{schema}",
                         args.rows, batch_rows, args.baseline_s, args.group,
                         args.period_ms / 1000)
            finally:
                with admin.begin() as connection:
                    connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        if not args.skip_sqlite:
            path = folder / f"{batch_rows}.db"
            run_case("SQLite", f"sqlite:///{path}", args.rows, batch_rows, args.baseline_s,
                     args.group, args.period_ms / 1000)
            for p in folder.glob(f"{batch_rows}.db*"):
                p.unlink()


if __name__ == "__main__":
    main()
