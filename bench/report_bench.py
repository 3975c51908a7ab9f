"""Time and peak memory of the report job against window size, on SQLite and PostgreSQL.

Each case stores N production predictions (128-d embeddings, quality features, a quarter
labeled) of one model version plus a 2,000-row reference profile, then runs
``run_report_job`` end to end in a fresh process (window counts and sample queries,
Evidently presets, vidmon's drift tests, HTML, storing it) and prints its wall time and the
process's peak RSS. Windows over ``--sample-rows`` (default: the monitor's 50,000) are
tested on a uniform sample drawn by the database. Target: 1M rows in under 60 s and under
2 GB on 2 cores.

Usage: python bench/report_bench.py [--sizes 10000 100000 1000000] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from monitor.features import FEATURE_NAMES
from monitor.job import run_report_job
from monitor.profile import ReferenceProfile
from monitor.settings import MonitorSettings
from monitor.store import PredictionRepository, create_store_engine, upgrade_database
from monitor.store.records import PredictionRecord, encode_embedding
from monitor.store.reports import ReportRepository

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CLASSES = tuple(f"class_{i}" for i in range(10))
DIM = 128
END = datetime(2026, 11, 2, 12, tzinfo=UTC)
CHUNK = 20_000
ROOT = Path(__file__).resolve().parents[1]


def _features(rng: np.random.Generator) -> dict[str, float]:
    row = {name: float(rng.normal(50, 10)) for name in FEATURE_NAMES}
    row.update(frame_count=16.0, fps=8.0, width=32.0, height=32.0, duration=2.0)
    return row


def _embeddings(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    centres = np.random.default_rng(7).normal(0, 1, (len(CLASSES), DIM))
    return (centres[labels] + rng.normal(0, 0.5, (len(labels), DIM))).astype(np.float32)


def reference(n: int = 2000) -> ReferenceProfile:
    rng = np.random.default_rng(0)
    true = rng.integers(0, len(CLASSES), n)
    probabilities = rng.dirichlet(np.ones(len(CLASSES)) * 0.1, n)
    probabilities[np.arange(n), true] += 1.0
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return ReferenceProfile.build(label_names=CLASSES, true_labels=true,
                                  probabilities=probabilities,
                                  embeddings=_embeddings(probabilities.argmax(1), rng),
                                  features=[_features(rng) for _ in range(n)])


def production(start: int, count: int, total: int) -> list[PredictionRecord]:
    """Rows ``start`` to ``start + count`` of a window of ``total`` evenly spread over 50 min."""
    rng = np.random.default_rng(start)
    labels = rng.integers(0, len(CLASSES), count)
    embeddings = _embeddings(labels, rng)
    step = timedelta(minutes=50) / total
    first = END - timedelta(minutes=55)
    return [PredictionRecord(
        model_name="bench", model_version="1", predicted_label=CLASSES[labels[i]],
        confidence=float(rng.uniform(0.6, 1.0)), entropy=0.5,
        probabilities={CLASSES[labels[i]]: 0.9}, embedding=encode_embedding(embeddings[i]),
        features=_features(rng), created_at=first + step * (start + i),
        true_label=CLASSES[labels[i]] if i % 4 == 0 else None) for i in range(count)]


def fill(url: str, n: int) -> float:
    """Store the window; returns seconds taken."""
    engine = create_store_engine(url)
    upgrade_database(engine)
    predictions = PredictionRepository(engine)
    started = time.perf_counter()
    for start in range(0, n, CHUNK):
        predictions.add_predictions(production(start, min(CHUNK, n - start), n))
        if n > CHUNK:
            print(f"  stored {min(start + CHUNK, n):,}/{n:,}", end="\r", file=sys.stderr,
                  flush=True)
    if n > CHUNK:
        print(" " * 40, end="\r", file=sys.stderr, flush=True)
    if engine.dialect.name == "postgresql":  # as autovacuum would after a bulk load
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                sa.text("ANALYZE predictions"))
    engine.dispose()
    return time.perf_counter() - started


def child(url: str, sample_rows: int | None) -> None:
    """Run the report job once in this process; print its time, peak RSS and what it did."""
    engine = create_store_engine(url)
    profile = reference()
    settings = MonitorSettings(interval_s=3600, lateness_s=0, window_minutes=60,
                               **({"sample_rows": sample_rows} if sample_rows else {}))
    repository, reports = PredictionRepository(engine), ReportRepository(engine)
    started = time.perf_counter()
    outcome = run_report_job(settings, repository, reports, lambda *_: profile, now=END)
    seconds = time.perf_counter() - started
    summary = reports.get(outcome.report_id)["summary"]
    print(json.dumps({"seconds": seconds, "verdict": outcome.verdict, "rows": summary["rows"],
                      "sample_rows": summary["sample_rows"],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(url: str, sample_rows: int | None) -> dict:
    """The job in a fresh process, so the peak RSS is the job's alone."""
    command = [sys.executable, str(Path(__file__)), "--child", url]
    if sample_rows:
        command += ["--sample-rows", str(sample_rows)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--sample-rows", type=int, default=None,
                        help="the monitor's sample size (default: its setting's default)")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--explain", action="store_true",
                        help="print each database's plans for the window queries")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.sample_rows)
        return
    folder = Path(tempfile.mkdtemp(prefix="vidmon-report-bench-"))
    admin = None if args.skip_postgres else sa.create_engine(POSTGRES)
    for n in args.sizes:
        stores = [("SQLite", f"sqlite:///{folder / f'{n}.db'}", None)]
        if admin is not None:
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            with admin.begin() as connection:
                connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            stores.append(("PostgreSQL", f"{POSTGRES}?options=-csearch_path%3D{schema}", schema))
        for name, url, schema in stores:
            try:
                filled = fill(url, n)
                result = measure(url, args.sample_rows)
                print(f"{n:>9,} predictions x {DIM}-d, {name:10s}: report {result['seconds']:6.1f} s, "
                      f"peak RSS {result['peak_rss_mb']:6.0f} MB, tests on "
                      f"{result['sample_rows'] or result['rows']:,} rows, verdict "
                      f"{result['verdict']} (storing took {filled:.0f} s)", flush=True)
                if args.explain:
                    engine = create_store_engine(url)
                    plans = PredictionRepository(engine).explain_window(
                        "bench", "1", END - timedelta(minutes=60), END,
                        args.sample_rows or MonitorSettings().sample_rows)
                    engine.dispose()
                    for query, plan in plans.items():
                        print(f"  {name} plan of the window's {query} query:\n    "
                              + plan.replace("\n", "\n    "), flush=True)
            finally:
                if schema is not None:
                    with admin.begin() as connection:
                        connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        for path in folder.glob(f"{n}.db*"):
            path.unlink()


if __name__ == "__main__":
    main()
