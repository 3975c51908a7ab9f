"""Time of the report job against window size, on SQLite and PostgreSQL, in one run.

Each case stores N production predictions (128-d embeddings, quality features) of one
model version plus a reference profile, then times ``run_report_job`` end to end: window
and reference queries, Evidently presets, vidmon's drift tests, HTML, and storing it.
Bar from the monitoring issue: 100k predictions in under 60 s on 2 cores.

Usage: python bench/report_bench.py [--sizes 1000 10000 100000] [--skip-postgres]
"""

from __future__ import annotations

import argparse
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


def production(n: int) -> list[PredictionRecord]:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, len(CLASSES), n)
    embeddings = _embeddings(labels, rng)
    step = timedelta(minutes=50) / n
    start = END - timedelta(minutes=55)
    return [PredictionRecord(
        model_name="bench", model_version="1", predicted_label=CLASSES[labels[i]],
        confidence=float(rng.uniform(0.6, 1.0)), entropy=0.5,
        probabilities={CLASSES[labels[i]]: 0.9}, embedding=encode_embedding(embeddings[i]),
        features=_features(rng), created_at=start + step * i,
        true_label=CLASSES[labels[i]] if i % 4 == 0 else None) for i in range(n)]


def measure(url: str, n: int, records: list[PredictionRecord], profile: ReferenceProfile) -> float:
    engine = create_store_engine(url)
    upgrade_database(engine)
    predictions = PredictionRepository(engine)
    predictions.add_predictions(records[:n])
    started = time.perf_counter()
    outcome = run_report_job(MonitorSettings(interval_s=3600, lateness_s=0, window_minutes=60),
                             predictions,
                             ReportRepository(engine), lambda *_: profile, now=END)
    seconds = time.perf_counter() - started
    assert outcome.status == "reported", outcome
    engine.dispose()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    profile = reference()
    records = production(max(args.sizes))
    folder = Path(tempfile.mkdtemp(prefix="vidmon-report-bench-"))
    admin = None if args.skip_postgres else sa.create_engine(POSTGRES)
    measure(f"sqlite:///{folder / 'warmup.db'}", 200, records, profile)  # imports, caches
    for n in args.sizes:
        line = f"{n:>7} predictions x {DIM}-d:"
        sqlite_url = f"sqlite:///{folder / f'{n}.db'}"
        line += f" SQLite {measure(sqlite_url, n, records, profile):6.1f} s"
        if admin is not None:
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            with admin.begin() as connection:
                connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            try:
                seconds = measure(f"{POSTGRES}?options=-csearch_path%3D{schema}", n, records,
                                  profile)
                line += f" | PostgreSQL {seconds:6.1f} s"
            finally:
                with admin.begin() as connection:
                    connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        print(line, flush=True)


if __name__ == "__main__":
    main()
