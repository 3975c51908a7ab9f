"""The prediction service through a real uvicorn server on 127.0.0.1, with real video files."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from monitor.settings import ServeSettings, Settings
from monitor.store import PredictionRepository, create_store_engine
from serving.app import create_app
from tests.waiting import wait_until
from tests.media import audio_only_wav, npy_bytes, sample_clip, video_bytes
from serving.background import running_server
from training.registry import RegistrySource
from training.synthetic import CLASS_NAMES, ClipSpec


@pytest.fixture
def service_settings(model_store: Settings, database_url: str, tmp_path: Path) -> Settings:
    return model_store.model_copy(update={
        "database_url": database_url,
        "clip_dir": tmp_path / "clips",
        "serve": ServeSettings(max_upload_bytes=200_000, max_wait_ms=20, clip_sample_rate=1.0,
                               spool_path=tmp_path / "spool.jsonl"),
    })


@pytest.fixture
def server(service_settings: Settings) -> Iterator[tuple[httpx.Client, PredictionRepository]]:
    app = create_app(service_settings, RegistrySource(service_settings))
    engine = create_store_engine(service_settings.database_url)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, PredictionRepository(engine)
    engine.dispose()


def _rows(repository: PredictionRepository, client: httpx.Client) -> int:
    """Rows in the store: everything the service acknowledged is committed already."""
    return repository.count()


def test_predicts_video_files_and_raw_clips_and_logs_each(server, service_settings) -> None:
    client, repository = server
    answers = []
    for name, data, content_type in [
        ("a.mp4", video_bytes(".mp4"), "video/mp4"),
        ("a.webm", video_bytes(".webm"), "video/webm"),
        ("a.npy", npy_bytes(sample_clip()), "application/x-npy"),
    ]:
        response = client.post("/v1/predict", files={"file": (name, data, content_type)})
        assert response.status_code == 200, response.text
        answers.append(response.json())
    for answer in answers:
        assert answer["label"] in CLASS_NAMES
        assert answer["model"] == {"name": service_settings.model_name, "version": "1"}
        assert len(answer["top_k"]) == 3
        assert answer["top_k"][0]["label"] == answer["label"]
        assert answer["timings_ms"]["total"] > 0
    assert _rows(repository, client) == 3
    rows = repository.get(a["prediction_id"] for a in answers)
    mp4 = rows[answers[0]["prediction_id"]]
    assert mp4["codec"] == "h264" and mp4["content_type"] == "video/mp4"
    assert mp4["width"] == 64.0 and mp4["fps"] == pytest.approx(12.0, rel=0.1)
    assert mp4["model_version"] == "1" and len(mp4["embedding"]) == 4 * 128
    assert sum(mp4["probabilities"].values()) == pytest.approx(1.0, rel=1e-4)
    raw = rows[answers[2]["prediction_id"]]
    assert raw["codec"] is None and raw["fps"] is None
    kept = Path(service_settings.clip_dir) / raw["clip_path"]
    wait_until(kept.exists, 10)  # clips reach their store behind the answer
    assert np.load(kept).shape == (16, 32, 32, 3)


def test_batch_endpoint_answers_every_file(server) -> None:
    client, repository = server
    files = [("files", (f"c{i}.npy", npy_bytes(sample_clip(seed=i)), "application/x-npy"))
             for i in range(5)]
    response = client.post("/v1/predict/batch", files=files)
    assert response.status_code == 200, response.text
    ids = [p["prediction_id"] for p in response.json()["predictions"]]
    assert len(set(ids)) == 5
    assert _rows(repository, client) == 5


@pytest.mark.parametrize(("name", "data", "content_type", "status", "message"), [
    ("bad.mp4", b"\x00\x01garbage" * 100, "video/mp4", 422, "not a readable video"),
    ("cut.mp4", video_bytes(".mp4")[:300], "video/mp4", 422, "video"),
    ("notes.txt", b"hello", "text/plain", 415, "unsupported content type"),
    ("sound.wav", audio_only_wav(), "video/x-wav", 422, "no video stream"),
    ("big.npy", npy_bytes(np.zeros((16, 120, 120, 3), np.uint8)), "application/x-npy", 413,
     "over the limit"),
    ("flat.npy", npy_bytes(np.zeros((16, 32, 32), np.uint8)), "application/x-npy", 422, "shape"),
    ("f32.npy", npy_bytes(np.zeros((16, 32, 32, 3), np.float32)), "application/x-npy", 422,
     "uint8"),
    ("nan.npy", npy_bytes(np.full((4, 8, 8, 3), np.nan, np.float64)), "application/x-npy", 422,
     "got dtype '<f8'"),
    ("empty.mp4", b"", "video/mp4", 422, "empty"),
])
def test_bad_input_gets_a_clear_4xx_and_writes_nothing(
    server, name: str, data: bytes, content_type: str, status: int, message: str
) -> None:
    client, repository = server
    response = client.post("/v1/predict", files={"file": (name, data, content_type)})
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert _rows(repository, client) == 0


def test_the_file_can_be_the_request_body_itself(server) -> None:
    client, repository = server
    clip = npy_bytes(sample_clip())
    as_form = client.post("/v1/predict", files={"file": ("a.npy", clip, "application/x-npy")})
    as_body = client.post("/v1/predict", content=clip,
                          headers={"content-type": "application/x-npy"})
    video = client.post("/v1/predict", content=video_bytes(".mp4"),
                        headers={"content-type": "video/mp4"})
    assert as_form.status_code == as_body.status_code == video.status_code == 200, video.text
    assert as_body.json()["top_k"] == as_form.json()["top_k"]
    assert _rows(repository, client) == 3
    # the same rules as for a form's file: type, emptiness, size
    assert client.post("/v1/predict", content=clip,
                       headers={"content-type": "text/plain"}).status_code == 415
    assert client.post("/v1/predict", content=b"",
                       headers={"content-type": "video/mp4"}).status_code == 422
    too_big = client.post("/v1/predict", content=b"\0" * 300_000,
                          headers={"content-type": "video/mp4"})
    assert too_big.status_code == 413 and "max_upload_bytes" in too_big.json()["detail"]
    assert _rows(repository, client) == 3


def test_one_bad_file_rejects_a_batch_whole(server) -> None:
    client, repository = server
    files = [("files", ("ok.npy", npy_bytes(sample_clip()), "application/x-npy")),
             ("files", ("bad.mp4", b"junk" * 100, "video/mp4"))]
    assert client.post("/v1/predict/batch", files=files).status_code == 422
    assert client.post("/v1/predict", data={"x": "1"}).status_code == 422  # no file at all
    assert _rows(repository, client) == 0


def test_feedback_stores_labels_and_reports_unknowns(server) -> None:
    client, repository = server
    ids = [client.post("/v1/predict", files={
        "file": ("c.npy", npy_bytes(sample_clip(seed=i)), "application/x-npy")}).json()[
        "prediction_id"] for i in range(2)]
    body = {"labels": [{"prediction_id": ids[0], "label": "move_right"},
                       {"prediction_id": ids[1], "label": "no_such_class"},
                       {"prediction_id": "0" * 32, "label": "steady"}]}
    first = client.post("/v1/feedback", json=body)
    second = client.post("/v1/feedback", json=body)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert first.json()["stored"] == [ids[0]]
    assert first.json()["unknown_ids"] == ["0" * 32]
    assert [u["label"] for u in first.json()["unknown_labels"]] == ["no_such_class"]
    assert repository.get([ids[0]])[ids[0]]["true_label"] == "move_right"
    assert client.post("/v1/feedback", json={"labels": []}).status_code == 422


def test_operations_endpoints(server) -> None:
    client, _ = server
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["version"] == "1"
    client.post("/v1/predict", files={"file": ("c.npy", npy_bytes(sample_clip()),
                                                "application/x-npy")})
    metrics = client.get("/metrics").text
    for name in ("vidmon_requests_total", "vidmon_request_seconds_bucket",
                 "vidmon_batch_size_bucket", "vidmon_log_queue_depth", "vidmon_spool_records",
                 'vidmon_model_info{name="vidmon-serving-model",version="1"}'):
        assert name in metrics
    assert 'route="/v1/predict",status="200"' in metrics
    threads = re.search(r"^vidmon_model_threads (\S+)$", metrics, re.MULTILINE)
    assert threads and 1 <= float(threads.group(1)) <= len(os.sched_getaffinity(0))
    client.get("/no/such/path/1234")
    assert "/no/such/path" not in client.get("/metrics").text  # unknown paths share one label
    assert client.get("/openapi.json").json()["paths"]["/v1/predict"]
    assert client.get("/docs").status_code == 200


def test_shutdown_flushes_every_acknowledged_prediction(service_settings: Settings) -> None:
    app = create_app(service_settings, RegistrySource(service_settings))
    clip = npy_bytes(sample_clip(spec=ClipSpec(16, 32, 32)))
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        acknowledged = [client.post("/v1/predict", files={
            "file": ("c.npy", clip, "application/x-npy")}).status_code for _ in range(30)]
    assert acknowledged == [200] * 30
    engine = create_store_engine(service_settings.database_url)
    assert PredictionRepository(engine).count() == 30
    engine.dispose()


def test_reports_api_serves_summaries_pages_and_timeline(server) -> None:
    from datetime import UTC, datetime, timedelta

    from monitor.job import run_report_job
    from monitor.settings import MonitorSettings
    from monitor.store.reports import ReportRepository
    from tests.factories import production_records, reference_profile

    client, repository = server
    reports = ReportRepository(repository.engine)
    hour = datetime(2026, 11, 2, 10, tzinfo=UTC)
    profile = reference_profile()
    repository.add_predictions(production_records(100, hour - timedelta(minutes=30), seed=1))
    repository.add_predictions(production_records(100, hour + timedelta(minutes=30), seed=2,
                                                  brightness=140.0))
    settings = MonitorSettings(interval_s=3600, lateness_s=0, window_minutes=60)
    for now in (hour, hour + timedelta(hours=1)):
        run_report_job(settings, repository, reports, lambda *_: profile, now=now)

    listed = client.get("/v1/reports", params={"model_name": "m", "limit": 1}).json()
    assert listed["total"] == 2 and len(listed["items"]) == 1
    newest = listed["items"][0]
    assert newest["verdict"] == "drift"
    # the second question, beside the first: brighter clips the model still gets right
    assert newest["accuracy_risk"] == "ok" and newest["estimable"] is True
    assert newest["labels_needed"] is None
    detail = client.get(f"/v1/reports/{newest['id']}").json()
    assert detail["summary"]["column_drift"]["brightness"]["drifted"]
    page = client.get(f"/v1/reports/{newest['id']}/html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Per-column detail, one row per clip (Evidently" in page.text
    points = client.get("/v1/monitoring/timeline", params={"model_name": "m"}).json()["points"]
    assert [p["verdict"] for p in points] == ["no_drift", "drift"]
    later = (hour + timedelta(minutes=1)).isoformat()  # since is inclusive of window ends
    assert client.get("/v1/reports", params={"since": later}).json()["total"] == 1
    for path in ("/v1/reports/nope", "/v1/reports/nope/html", "/v1/reports/..%2F..%2Fetc/html"):
        assert client.get(path).status_code == 404
    # retention prunes the older page and keeps its summary, and says so
    from monitor.store.retention import RetentionRepository

    assert RetentionRepository(repository.engine).prune_reports(
        hour + timedelta(minutes=30), limit=10) == 1
    older = points[0]["id"]
    pruned = client.get(f"/v1/reports/{older}/html")
    assert pruned.status_code == 404 and "pruned by retention" in pruned.text
    assert client.get(f"/v1/reports/{older}").json()["verdict"] == "no_drift"
    assert client.get(f"/v1/reports/{newest['id']}/html").status_code == 200
    assert client.get("/v1/reports", params={"limit": 0}).status_code == 422
