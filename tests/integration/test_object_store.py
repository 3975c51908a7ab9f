"""Object storage on a real S3 server (moto's, on 127.0.0.1) and on a folder: the clip store,
retention, the Evidently workspace copies, predictions while the store is away, and long
videos taken in by one replica and classified by another through the video store."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

from monitor.objects import open_store
from monitor.objects.clips import ClipStore
from monitor.objects.workspace import EvidentlyWorkspace
from monitor.retention import GarbageCollector
from monitor.settings import MediaSettings, ObjectStoreSettings, ServeSettings, Settings
from monitor.store import PredictionRepository
from monitor.store.reports import ReportRepository
from monitor.store.retention import RetentionRepository
from serving.app import create_app
from serving.background import running_server
from tests.colour_model import ColourSource, write_scenes
from tests.factories import make_record
from tests.media import npy_bytes
from tests.s3server import S3Server
from tests.waiting import free_port, wait_until

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


@pytest.fixture(params=["folder", "s3"])
def clip_store(request: pytest.FixtureRequest, tmp_path: Path) -> ClipStore:
    if request.param == "folder":
        return ClipStore(tmp_path / "clips")
    s3 = request.getfixturevalue("s3")
    return ClipStore(s3.bucket() + "/clips", s3.settings())


def _clip(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (4, size, size, 3), dtype=np.uint8)


def test_the_clip_store_is_one_contract_on_a_folder_and_on_s3(clip_store: ClipStore) -> None:
    first = clip_store.save(_clip(1))
    assert clip_store.save(_clip(1)) == first  # content addressed: stored once
    second = clip_store.save(_clip(2))
    np.testing.assert_array_equal(clip_store.load(first), _clip(1))
    listed = sorted(info.key for page in clip_store.buckets() for info in page)
    assert listed == sorted([first, second])
    assert clip_store.delete(first, saved_before=time.time() - 3600) == 0  # saved since
    size = clip_store.delete(first, saved_before=time.time() + 5)
    assert size > 128
    with pytest.raises(FileNotFoundError):
        clip_store.load(first)
    with pytest.raises(ValueError, match="outside"):
        clip_store.load("../../etc/passwd")
    assert [info.key for page in clip_store.buckets() for info in page] == [second]


def test_retention_keeps_an_s3_clip_store_to_its_grace_and_size(
        s3: S3Server, repository: PredictionRepository) -> None:
    store = ClipStore(s3.bucket(), s3.settings())
    hour = timedelta(hours=1)
    recent = [make_record(i, created_at=NOW - (10 - i) * hour,
                          clip_path=store.save(_clip(i, 128))) for i in range(10)]
    orphan = store.save(_clip(30))  # a clip whose record never landed
    time.sleep(2.2)
    fresh_orphan = store.save(_clip(31))  # its record may still be queued
    repository.add_predictions(recent)
    settings = dict(prediction_days=None, labeled_days=None, clip_days=None, report_days=None,
                    clip_max_mb=1, clip_grace_s=1.5, batch_rows=100)
    from monitor.settings import RetentionSettings

    result = GarbageCollector(
        RetentionSettings(**settings), RetentionRepository(repository.engine),
        ReportRepository(repository.engine), store, max_attempts=3, clock=lambda: NOW,
        progress=lambda _: None).run()
    kept = {info.key for page in store.buckets() for info in page}
    assert orphan not in kept and fresh_orphan in kept
    assert kept == {r.clip_path for r in recent[5:]} | {fresh_orphan}  # five newest fit
    assert result.clip_rows_released == 5 and result.clip_files == 6
    assert result.clip_bytes <= 1_000_000


def test_report_runs_go_to_an_s3_workspace_that_evidently_opens(
        s3: S3Server, tmp_path: Path) -> None:
    from evidently import Report
    from evidently.presets import DataDriftPreset
    from evidently.ui.workspace import Workspace
    import pandas as pd

    location = s3.bucket() + "/evidently"
    frame = pd.DataFrame({"brightness": np.random.default_rng(0).normal(size=60)})
    snapshot = Report([DataDriftPreset()]).run(frame, frame)
    assert EvidentlyWorkspace(location, objects=s3.settings()).add({"columns": snapshot},
                                                                  "m v1 first") == 1
    # another process (a new monitor leader) adds to the same project
    assert EvidentlyWorkspace(location, objects=s3.settings()).add({"columns": snapshot},
                                                                  "m v1 second") == 1
    store = open_store(location, s3.settings())
    copy = tmp_path / "ws"  # what `aws s3 sync` of the prefix gives a person
    for page in store.pages():
        for info in page:
            (copy / info.key).parent.mkdir(parents=True, exist_ok=True)
            (copy / info.key).write_bytes(store.get(info.key))
    browsed = Workspace.create(str(copy))
    projects = browsed.search_project("vidmon")
    assert len(projects) == 1
    assert len(browsed.list_runs(projects[0].id)) == 2

    workspace = EvidentlyWorkspace(location, objects=s3.settings())
    assert workspace.prune(datetime.now(UTC) - timedelta(days=1)) == 0
    assert workspace.prune(datetime.now(UTC) + timedelta(seconds=1), dry_run=True) == 2
    assert workspace.prune(datetime.now(UTC) + timedelta(seconds=1)) == 2
    assert not [i for page in store.pages() for i in page if "/snapshots/" in i.key]


def _metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_predictions_never_wait_for_an_s3_clip_store_that_is_away(
        database_url: str, tmp_path: Path) -> None:
    server = S3Server().start()  # its own: this test stops it
    try:
        bucket = server.bucket()
        settings = Settings(
            database_url=database_url, clip_dir=bucket + "/clips", evidently_workspace=None,
            objects=server.settings(timeout_s=1.0).model_copy(update={"clip_queue": 6}),
            serve=ServeSettings(max_wait_ms=2, clip_sample_rate=1.0,
                                spool_path=tmp_path / "spool.jsonl"))
        clip = npy_bytes(np.full((8, 32, 32, 3), 200, np.uint8))

        def predict(client: httpx.Client) -> dict:
            started = time.monotonic()
            response = client.post("/v1/predict", files={"file": ("c.npy", clip,
                                                                   "application/x-npy")})
            assert response.status_code == 200, response.text
            assert time.monotonic() - started < 2.0  # never the store's timeouts
            return response.json()

        with running_server(create_app(settings, ColourSource())) as url, \
                httpx.Client(base_url=url, timeout=30) as client:
            predict(client)
            wait_until(lambda: _metric(client, "vidmon_clips_stored") == 1, 10)
            server.stop()
            for _ in range(10):
                predict(client)
            wait_until(lambda: _metric(client, "vidmon_clip_store_available") == 0, 10)
            assert _metric(client, "vidmon_clips_skipped") == 4  # past the queue of 6
            assert _metric(client, "vidmon_clip_queue_depth") == 6
            server.start()  # back, empty: the bucket is made again
            server.bucket(bucket.removeprefix("s3://"))
            wait_until(lambda: _metric(client, "vidmon_clip_queue_depth") == 0, 60)
            assert _metric(client, "vidmon_clip_store_available") == 1
            assert _metric(client, "vidmon_clips_stored") == 7
            assert _metric(client, "vidmon_clips_failures") >= 1
        stored = {i.key for page in ClipStore(settings.clip_dir, settings.objects).buckets()
                  for i in page}
        assert len(stored) == 1  # the same clip each time: one object
    finally:
        server.stop()


def test_a_long_video_taken_in_by_one_replica_is_classified_by_another(
        s3: S3Server, database_url: str, tmp_path: Path) -> None:
    """Two replicas that share no disk: the one that takes the upload runs no jobs, the
    other reads the file from the video store."""
    scenes = write_scenes(tmp_path / "scenes.mp4", [("red", 2.0), ("blue", 2.0)])
    store = s3.bucket()

    def replica(name: str, max_jobs: int) -> Settings:
        return Settings(database_url=database_url, clip_dir=store + "/clips",
                        evidently_workspace=None, objects=s3.settings(),
                        serve=ServeSettings(max_wait_ms=2,
                                            spool_path=tmp_path / name / "spool.jsonl"),
                        media=MediaSettings(video_dir=tmp_path / name / "videos",
                                            video_store=store + "/videos",
                                            poll_interval_s=0.1, max_jobs=max_jobs))

    with running_server(create_app(replica("a", 0), ColourSource())) as a, \
            httpx.Client(base_url=a, timeout=60) as client:
        response = client.post("/v1/videos", files={"file": ("s.mp4", scenes.read_bytes(),
                                                             "video/mp4")})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert not list((tmp_path / "a" / "videos").glob("*"))  # only in the store
        videos = open_store(store + "/videos", s3.settings())
        assert videos.stat(f"{job_id}.video") is not None
        with running_server(create_app(replica("b", 1), ColourSource())):
            deadline = time.monotonic() + 60
            while (job := client.get(f"/v1/videos/{job_id}").json())["status"] not in (
                    "done", "failed") and time.monotonic() < deadline:
                time.sleep(0.1)
    assert job["status"] == "done", job
    assert [(s["label"], s["start_s"], s["end_s"]) for s in job["timeline"]] == [
        ("red", 0.0, 2.0), ("blue", 2.0, 4.0)]
    assert videos.stat(f"{job_id}.video") is None  # gone once done
    assert not list((tmp_path / "b" / "videos").glob("*"))


def test_an_unknown_location_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        open_store("gs://bucket/x")
    with pytest.raises(ValueError, match="no bucket"):
        open_store("s3://", ObjectStoreSettings())


def test_vidmon_migrate_makes_the_schema_and_checks_or_creates_the_buckets(
        s3: S3Server, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    import sqlalchemy as sa

    database = f"sqlite:///{tmp_path / 'vidmon.db'}"
    # MLflow's server starts after the migration (its artifacts live in these buckets):
    # migrate never waits for it, so it points at a port nothing listens on here.
    env = {**os.environ, "VIDMON_DATABASE_URL": database,
           "VIDMON_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
           "VIDMON_CLIP_DIR": "s3://fresh-clips/p", "VIDMON_EVIDENTLY_WORKSPACE": "",
           "VIDMON_OBJECTS": s3.settings().model_dump_json().replace(
               '"**********"', '"vidmon-test-secret"')}

    def migrate(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "simulations.cli", "migrate", *flags],
                              env=env, capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)

    missing = migrate()
    assert missing.returncode == 1
    assert "clips: s3://fresh-clips/p is not usable" in missing.stderr
    assert "--create-buckets makes a missing one" in missing.stderr
    made = migrate("--create-buckets")
    assert made.returncode == 0, made.stderr
    assert "clips: s3://fresh-clips/p (created)" in made.stderr
    again = migrate()
    assert again.returncode == 0 and "(exists)" in again.stderr
    engine = sa.create_engine(database)
    assert "predictions" in sa.inspect(engine).get_table_names()
    engine.dispose()
    ClipStore("s3://fresh-clips/p", s3.settings()).save(_clip(5))  # usable
