"""Whole videos classified clip by clip in the background, through a real uvicorn server,
on real H.264 files written with PyAV, with a model that is not vidmon's own (the colour
model, whose answer for each scene is known)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from monitor.settings import MediaSettings, MonitorSettings, ServeSettings, Settings
from monitor.store import PredictionRepository, create_store_engine, upgrade_database
from monitor.store.media import VideoJobRepository
from monitor.store.schema import predictions
from serving.app import create_app
from serving.background import running_server
from tests.colour_model import ColourSource, write_scenes

SCENES = [("red", 4.0), ("green", 6.0), ("blue", 4.0)]


@pytest.fixture(scope="module")
def scenes_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scenes(tmp_path_factory.mktemp("scenes") / "scenes.mp4", SCENES)


def _settings(database_url: str, tmp: Path, **media: object) -> Settings:
    return Settings(database_url=database_url, clip_dir=tmp / "clips",
                    serve=ServeSettings(max_wait_ms=2, spool_path=tmp / "spool.jsonl"),
                    monitor=MonitorSettings(clips_per_video=4),
                    media=MediaSettings(video_dir=tmp / "videos", poll_interval_s=0.1,
                                        **media))


@contextmanager
def _client(settings: Settings) -> Iterator[httpx.Client]:
    with running_server(create_app(settings, ColourSource())) as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        yield client


def _wait(client: httpx.Client, job_id: str, until: set[str], timeout: float = 90
          ) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/videos/{job_id}").json()
        if job["status"] in until or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def _rows(database_url: str, job_id: str) -> list[dict]:
    engine = create_store_engine(database_url)
    with engine.connect() as connection:
        rows = [dict(r) for r in connection.execute(sa.select(predictions).where(
            predictions.c.video_id == job_id).order_by(predictions.c.clip_start_s)).mappings()]
    engine.dispose()
    return rows


def test_a_whole_video_gives_every_clip_and_the_timeline_of_its_scenes(
        scenes_file: Path, database_url: str, tmp_path: Path) -> None:
    with _client(_settings(database_url, tmp_path)) as client:
        response = client.post("/v1/videos", data={"source": "camera-3"},
                               files={"file": ("scenes.mp4", scenes_file.read_bytes(),
                                               "video/mp4")})
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert accepted["status"] == "queued" and accepted["clips_expected"] == 14
        job = _wait(client, accepted["id"], {"done", "failed"})
        assert job["status"] == "done", job
        assert [(s["label"], s["start_s"], s["end_s"]) for s in job["timeline"]] == [
            ("red", 0.0, 4.0), ("green", 4.0, 10.0), ("blue", 10.0, 14.0)]
        assert job["label"] == "green" and job["clips_done"] == 14 and job["progress"] == 1
        assert job["model"] == {"name": "colour-model", "version": "1"}
        detailed = client.get(f"/v1/videos/{accepted['id']}", params={"clips": "true"}).json()
        assert len(detailed["clips"]) == 14
        assert set(detailed["clips"][0]["scores"]) == {"red", "green", "blue"}

        labeled = client.post(f"/v1/videos/{accepted['id']}/labels",
                              json={"start_s": 4, "end_s": 10, "label": "blue"})
        assert labeled.status_code == 200 and labeled.json() == {"labeled_clips": 6}
        assert client.post(f"/v1/videos/{accepted['id']}/labels", json={
            "start_s": 4, "end_s": 10, "label": "purple"}).status_code == 422
    rows = _rows(database_url, accepted["id"])
    assert len(rows) == 14 and {r["source_id"] for r in rows} == {"camera-3"}
    assert [r["true_label"] for r in rows] == [None] * 4 + ["blue"] * 6 + [None] * 4
    # Its reports test 4 clips of it (monitor.clips_per_video), evenly spaced.
    sampled = [r["clip_start_s"] for r in rows if r["in_reports"] is not False]
    assert sampled == [0.0, 4.0, 7.0, 11.0]
    window = PredictionRepository(create_store_engine(database_url)).load_window(
        "colour-model", "1")
    assert sorted(window.frame["id"]) == sorted(r["id"] for r in rows if r["in_reports"]
                                                is not False)
    assert not list((tmp_path / "videos").iterdir())  # the upload is gone once done


def test_bad_long_videos_are_refused_and_leave_nothing(scenes_file: Path, database_url: str,
                                                       tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "ok.mp4").write_bytes(scenes_file.read_bytes())
    settings = _settings(database_url, tmp_path, max_video_seconds=10,
                         max_video_bytes=2_000_000, allowed_urls=[f"file://{allowed}/"])
    with _client(settings) as client:
        cases = {
            "not a video": client.post("/v1/videos", files={
                "file": ("x.mp4", b"\x00" * 5000, "video/mp4")}),
            "too long": client.post("/v1/videos", files={
                "file": ("s.mp4", scenes_file.read_bytes(), "video/mp4")}),
            "too big": client.post("/v1/videos", content=b"\x00" * 2_100_000,
                                   headers={"content-type": "video/mp4"}),
            "no file": client.post("/v1/videos", data={"source": "cam"}),
            "url outside": client.post("/v1/videos", data={"url": f"file://{scenes_file}"}),
            "url escaping": client.post("/v1/videos", data={
                "url": f"file://{allowed}/../{scenes_file.parent.name}/x.mp4"}),
            "bad source": client.post("/v1/videos", data={"source": "a b"}, files={
                "file": ("s.mp4", scenes_file.read_bytes(), "video/mp4")}),
        }
        statuses = {name: r.status_code for name, r in cases.items()}
        assert statuses == {"not a video": 422, "too long": 413, "too big": 413,
                            "no file": 422, "url outside": 422, "url escaping": 422,
                            "bad source": 422}, {n: r.text for n, r in cases.items()}
        assert "max_video_seconds" in cases["too long"].json()["detail"]
        assert "allowed_urls" in cases["url outside"].json()["detail"]
        # A URL under the allow-list is read in place, nothing copied; it is too long here.
        assert client.post("/v1/videos", data={"url": f"file://{allowed}/ok.mp4"}
                           ).status_code == 413
        assert client.get("/v1/videos/nope").status_code == 404
    assert VideoJobRepository(create_store_engine(database_url)).active_count() == 0
    assert not (tmp_path / "videos").exists() or not list((tmp_path / "videos").iterdir())


def test_jobs_queue_within_their_bound_survive_a_restart_and_can_be_cancelled(
        scenes_file: Path, database_url: str, tmp_path: Path) -> None:
    data = scenes_file.read_bytes()
    # A replica that takes no jobs itself (max_jobs 0): they wait in the store.
    with _client(_settings(database_url, tmp_path, max_jobs=0, max_queued_jobs=2)) as client:
        first = client.post("/v1/videos", content=data, headers={"content-type": "video/mp4"})
        second = client.post("/v1/videos", files={"file": ("b.mp4", data, "video/mp4")})
        third = client.post("/v1/videos", files={"file": ("c.mp4", data, "video/mp4")})
        assert [r.status_code for r in (first, second, third)] == [202, 202, 503]
        assert third.headers["retry-after"] == "30" and "max_queued_jobs" in third.text
        cancelled = client.delete(f"/v1/videos/{second.json()['id']}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    # Restarted as a replica that works: the job accepted before the restart is done.
    with _client(_settings(database_url, tmp_path)) as client:
        job = _wait(client, first.json()["id"], {"done", "failed"})
        assert job["status"] == "done" and job["clips_done"] == 14, job
        assert client.get(f"/v1/videos/{second.json()['id']}").json()["status"] == "cancelled"


def test_a_job_whose_replica_died_is_taken_over_where_it_stopped(
        scenes_file: Path, database_url: str, tmp_path: Path) -> None:
    engine = create_store_engine(database_url)
    upgrade_database(engine)
    jobs = VideoJobRepository(engine)
    started = datetime.now(UTC) - timedelta(minutes=5)
    jobs.create({"id": "a" * 32, "created_at": started, "location": str(scenes_file),
                 "duration_s": 14.0, "clips_expected": 14})
    # A replica took it, logged 9 clips, and stopped renewing its hold 5 minutes ago.
    assert jobs.claim("dead-replica", 15.0, started)["id"] == "a" * 32
    assert jobs.heartbeat("a" * 32, "dead-replica", started, clips_done=9,
                          seconds_done=9.0).held
    with _client(_settings(database_url, tmp_path, lease_s=2)) as client:
        job = _wait(client, "a" * 32, {"done", "failed"})
    assert job["status"] == "done" and job["clips_done"] == 14, job
    rows = _rows(database_url, "a" * 32)
    assert [r["clip_start_s"] for r in rows] == [9.0, 10.0, 11.0, 12.0, 13.0]
    assert jobs.heartbeat("a" * 32, "dead-replica", datetime.now(UTC)).held is False
    engine.dispose()


def test_a_replica_stopped_mid_job_gives_it_back_and_each_clip_is_logged_once(
        database_url: str, tmp_path: Path) -> None:
    video = write_scenes(tmp_path / "long.mp4", [("red", 20.0), ("blue", 20.0)])
    settings = _settings(database_url, tmp_path, job_batch_clips=1)
    # Each one-clip batch waits 100 ms for company: the job takes seconds, time to stop it.
    slow = settings.model_copy(update={"serve": settings.serve.model_copy(
        update={"max_wait_ms": 100})})
    with _client(slow) as client:
        job_id = client.post("/v1/videos", files={
            "file": ("long.mp4", video.read_bytes(), "video/mp4")}).json()["id"]
        _until_done = time.monotonic() + 60
        while client.get(f"/v1/videos/{job_id}").json()["clips_done"] < 3:
            assert time.monotonic() < _until_done
            time.sleep(0.05)
    stopped = VideoJobRepository(create_store_engine(database_url)).get(job_id)
    assert stopped["status"] == "queued" and stopped["holder"] is None  # given back
    assert 3 <= stopped["clips_done"] < 40
    with _client(settings) as client:
        job = _wait(client, job_id, {"done", "failed"})
    assert job["status"] == "done" and job["clips_done"] == 40, job
    assert [(s["label"], s["start_s"], s["end_s"]) for s in job["timeline"]] == [
        ("red", 0.0, 20.0), ("blue", 20.0, 40.0)]
    rows = _rows(database_url, job_id)
    assert [r["clip_start_s"] for r in rows] == [float(i) for i in range(40)]
