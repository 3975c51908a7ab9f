"""Retention on SQLite and PostgreSQL: old predictions go in batches once a report covered
them, and nothing a pending retrain or the reference still needs goes with them; the clip
store keeps to its age and size limits; old report pages lose their page, not their
summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from monitor.objects.clips import ClipStore
from monitor.report import build_report
from monitor.retention import GarbageCollector
from monitor.retrain_policy import RetrainDecision
from monitor.settings import RetentionSettings
from monitor.store import PredictionRepository
from monitor.store.reports import ReportRepository
from monitor.store.retention import RetentionRepository
from monitor.store.retrains import RetrainRepository
from monitor.store.schema import predictions
from tests.factories import make_record

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
LONG_AGO = time.time() - 86_400  # file times past any grace period
NO_LIMITS = dict(prediction_days=None, labeled_days=None, clip_days=None, clip_max_mb=None,
                 report_days=None, clip_grace_s=0)


def _report(repository: PredictionRepository, version: str, start: datetime,
            end: datetime) -> str:
    """A stored report on ``version`` over [start, end) (too few rows for tests)."""
    empty = repository.load_window("m", version, since=start, until=start)
    report = build_report(empty, empty, ("a",), model_name="m", model_version=version,
                          window_start=start, window_end=end)
    report_id = ReportRepository(repository.engine).save(report, now=end)
    assert report_id is not None
    return report_id


def _collector(repository: PredictionRepository, clips: ClipStore,
               **settings: object) -> GarbageCollector:
    lines: list[str] = []
    collector = GarbageCollector(
        RetentionSettings(**{**NO_LIMITS, **settings}), RetentionRepository(repository.engine),
        ReportRepository(repository.engine), clips, max_attempts=3, clock=lambda: NOW,
        progress=lines.append)
    collector.lines = lines  # type: ignore[attr-defined]
    return collector


def _clip(store: ClipStore, seed: int, size: int = 8) -> str:
    """Save a distinct clip, dated long ago on disk."""
    clip = np.random.default_rng(seed).integers(0, 255, (4, size, size, 3), dtype=np.uint8)
    relative = store.save(clip)
    os.utime(store.objects.root / relative, (LONG_AGO, LONG_AGO))
    return relative


def _ids(repository: PredictionRepository) -> set[str]:
    with repository.engine.connect() as connection:
        return set(connection.execute(sa.select(predictions.c.id)).scalars())


def _clip_paths(repository: PredictionRepository) -> dict[str, str | None]:
    with repository.engine.connect() as connection:
        return {i: p for i, p in connection.execute(sa.select(predictions.c.id,
                                                                predictions.c.clip_path))}


def test_old_predictions_go_in_batches_once_reported_and_the_rest_stays(
        repository: PredictionRepository, tmp_path: Path) -> None:
    store = ClipStore(tmp_path / "clips")
    day = timedelta(days=1)
    shared = _clip(store, 0)  # an old row's clip that a recent row also uses
    old = [make_record(i, created_at=NOW - 40 * day + i * timedelta(minutes=1),
                       clip_path=shared if i == 0 else _clip(store, i)) for i in range(7)]
    labeled_old = [make_record(10 + i, created_at=NOW - 100 * day) for i in range(2)]
    labeled_recent = [make_record(20 + i, created_at=NOW - 40 * day) for i in range(2)]
    after_report = [make_record(30 + i, created_at=NOW - 32 * day) for i in range(2)]
    recent = [make_record(40, created_at=NOW - day, clip_path=shared)]
    unreported = [make_record(50 + i, model_version="2", created_at=NOW - 40 * day)
                  for i in range(2)]
    reference = [make_record(60 + i, source="reference", created_at=NOW - 400 * day)
                 for i in range(3)]
    repository.add_predictions(old + labeled_old + labeled_recent + after_report + recent
                               + unreported + reference)
    repository.apply_feedback({r.id: "a" for r in labeled_old}, now=NOW - 99 * day)
    repository.apply_feedback({r.id: "a" for r in labeled_recent}, now=NOW - 39 * day)
    _report(repository, "1", NOW - 101 * day, NOW - 35 * day)
    everything = _ids(repository)

    collector = _collector(repository, store, prediction_days=30, labeled_days=90,
                           batch_rows=3)
    planned = collector.run(dry_run=True)
    assert planned.predictions_deleted == 9 and _ids(repository) == everything

    result = collector.run()
    gone = {r.id for r in old + labeled_old}
    assert result.predictions_deleted == 9
    assert _ids(repository) == everything - gone
    assert result.predictions_unreported == {"m v2": 2}
    assert any("deleting 9 predictions of m v1" in line for line in collector.lines)
    # each old row's own clip is gone; the one a recent row still uses stays
    assert result.clip_files_deleted == 6
    assert (store.objects.root / shared).exists() and result.clip_files == 1
    assert not any((store.objects.root / r.clip_path).exists() for r in old[1:])
    assert collector.run().predictions_deleted == 0  # nothing left to do


def test_a_pending_retrain_keeps_its_training_rows_and_clips(
        repository: PredictionRepository, tmp_path: Path) -> None:
    store = ClipStore(tmp_path / "clips")
    day = timedelta(days=1)
    before_drift = [make_record(i, created_at=NOW - 60 * day, clip_path=_clip(store, i))
                    for i in range(2)]
    since_drift = [make_record(10 + i, created_at=NOW - 45 * day, clip_path=_clip(store, 10 + i))
                   for i in range(3)]
    repository.add_predictions(before_drift + since_drift)
    repository.apply_feedback({r.id: "a" for r in before_drift + since_drift},
                              now=NOW - 44 * day)
    report_id = _report(repository, "1", NOW - 50 * day, NOW - 40 * day)
    retrains = RetrainRepository(repository.engine)
    decision = retrains.record(RetrainDecision(True, ["drift"], [report_id]), "m", "1",
                               now=NOW - 40 * day)

    collector = _collector(repository, store, prediction_days=30, labeled_days=30,
                           clip_days=1, clip_max_mb=1, batch_rows=2)
    result = collector.run()
    assert result.protected_models == ["m"]
    assert result.predictions_deleted == 2  # labeled before the drift began
    kept = _clip_paths(repository)
    assert set(kept) == {r.id for r in since_drift}
    assert all(path is not None and (store.objects.root / path).exists() for path in kept.values())

    retrains.start(decision)
    retrains.finish(decision, status="promoted", run_id="r", version="2", gate={}, now=NOW)
    assert collector.run().predictions_deleted == 3  # its lineage is in its MLflow run


def test_the_clip_store_keeps_to_its_age_and_size_oldest_first(
        repository: PredictionRepository, tmp_path: Path) -> None:
    store = ClipStore(tmp_path / "clips")
    hour = timedelta(hours=1)
    # ten recent clips of ~197 kB each: a 1 MB store keeps the five newest
    recent = [make_record(i, created_at=NOW - (10 - i) * hour, clip_path=_clip(store, i, 128))
              for i in range(10)]
    aged = make_record(20, created_at=NOW - timedelta(days=40), clip_path=_clip(store, 20))
    orphan = _clip(store, 30)  # a file whose record never landed
    fresh_orphan = store.save(np.zeros((4, 8, 8, 3), np.uint8))  # its record may be queued
    repository.add_predictions([*recent, aged])

    result = _collector(repository, store, clip_days=30, clip_max_mb=1, clip_grace_s=600,
                        batch_rows=100).run()
    paths = _clip_paths(repository)
    assert paths[aged.id] is None  # released by age; the row stays
    assert [paths[r.id] is None for r in recent] == [True] * 5 + [False] * 5
    assert all((store.objects.root / r.clip_path).exists() == (i >= 5) for i, r in enumerate(recent))
    assert not (store.objects.root / orphan).exists() and (store.objects.root / fresh_orphan).exists()
    assert result.clip_rows_released == 6 and result.clip_files_deleted == 7
    assert result.clip_bytes <= 1_000_000 < result.clip_bytes + 196_736
    assert result.clip_files == 6  # the five newest and the fresh orphan
    assert result.predictions_deleted == 0


def test_old_report_pages_are_pruned_unless_a_retrain_cites_them(
        repository: PredictionRepository, tmp_path: Path) -> None:
    day = timedelta(days=1)
    reports = ReportRepository(repository.engine)
    old = _report(repository, "1", NOW - 101 * day, NOW - 100 * day)
    cited = _report(repository, "1", NOW - 100 * day, NOW - 99 * day)
    recent = _report(repository, "1", NOW - 2 * day, NOW - day)
    RetrainRepository(repository.engine).record(RetrainDecision(True, ["drift"], [cited]),
                                                "m", "1", now=NOW - 99 * day)

    collector = _collector(repository, ClipStore(tmp_path / "clips"), report_days=90)
    assert collector.run(dry_run=True).reports_pruned == 1
    assert collector.run().reports_pruned == 1
    assert reports.html(old) is None and reports.get(old)["verdict"] == "insufficient_data"
    assert reports.html(cited) is not None and reports.html(recent) is not None
    assert collector.run().reports_pruned == 0


def test_vidmon_gc_prints_what_it_did(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'vidmon.db'}"
    repository = _migrated(database)
    repository.add_predictions([make_record(i, created_at=NOW - timedelta(days=40))
                                for i in range(3)])
    _report(repository, "1", NOW - timedelta(days=41), NOW - timedelta(days=39))
    env = {**os.environ, "VIDMON_DATABASE_URL": database,
           "VIDMON_CLIP_DIR": str(tmp_path / "clips"), "VIDMON_RETENTION__CLIP_MAX_MB": "none"}
    for flags in (["--dry-run"], []):
        done = subprocess.run([sys.executable, "-m", "simulations.cli", "gc", *flags],
                              env=env, capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["predictions_deleted"] == 3
        assert result["dry_run"] == bool(flags) and result["clip_bytes_limit"] is None
        assert repository.count() == (3 if flags else 0)
    assert "vidmon gc: deleting 3 predictions of m v1" in done.stderr
    # the default Evidently workspace had no copies: gc looked, pruned none, made nothing
    assert result["workspace_runs_pruned"] == 0
    assert not (tmp_path / "evidently-workspace").exists()
    repository.engine.dispose()


def _migrated(url: str) -> PredictionRepository:
    from monitor.store import create_store_engine, upgrade_database

    engine = create_store_engine(url)
    upgrade_database(engine)
    return PredictionRepository(engine)


@pytest.mark.parametrize("value", ["none", "250"])
def test_limits_are_set_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                             value: str) -> None:
    from monitor.settings import Settings

    monkeypatch.setenv("VIDMON_RETENTION__CLIP_MAX_MB", value)
    assert Settings().retention.clip_max_mb == (None if value == "none" else 250)
