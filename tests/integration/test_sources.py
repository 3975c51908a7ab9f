"""Predictions carry the source they came from (a camera, a stream, a client), through a
real uvicorn server on SQLite and PostgreSQL; the number of sources kept apart is bounded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from monitor.settings import ServeSettings, Settings
from monitor.store import PredictionRepository, create_store_engine
from monitor.store.sources import SourceRepository
from serving.app import create_app
from serving.background import running_server
from tests.media import npy_bytes, sample_clip
from training.registry import RegistrySource

CLIP = npy_bytes(sample_clip())


@pytest.fixture
def server(model_store: Settings, database_url: str, tmp_path: Path
           ) -> Iterator[tuple[httpx.Client, PredictionRepository]]:
    settings = model_store.model_copy(update={
        "database_url": database_url, "clip_dir": tmp_path / "clips",
        "serve": ServeSettings(max_wait_ms=5, max_sources=3, spool_path=tmp_path / "s.jsonl")})
    engine = create_store_engine(database_url)
    with running_server(create_app(settings, RegistrySource(settings))) as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        yield client, PredictionRepository(engine)
    engine.dispose()


def _source_of(repository: PredictionRepository, answer: dict) -> str | None:
    return repository.get([answer["prediction_id"]])[answer["prediction_id"]]["source_id"]


def test_a_source_sent_as_form_field_or_header_is_logged_with_the_prediction(server) -> None:
    client, repository = server
    form = client.post("/v1/predict", files={"file": ("a.npy", CLIP, "application/x-npy")},
                       data={"source": "camera-7"})
    raw = client.post("/v1/predict", content=CLIP, headers={
        "content-type": "application/x-npy", "x-vidmon-source": "dock/cam:2"})
    batch = client.post("/v1/predict/batch", data={"source": "camera-7"},
                        files=[("files", ("b.npy", CLIP, "application/x-npy"))] * 2)
    none = client.post("/v1/predict", files={"file": ("c.npy", CLIP, "application/x-npy")})
    assert [r.status_code for r in (form, raw, batch, none)] == [200] * 4, raw.text
    assert form.json()["source"] == "camera-7" and raw.json()["source"] == "dock/cam:2"
    assert _source_of(repository, form.json()) == "camera-7"
    assert _source_of(repository, raw.json()) == "dock/cam:2"
    assert {_source_of(repository, a) for a in batch.json()["predictions"]} == {"camera-7"}
    assert _source_of(repository, none.json()) is None and "source" not in none.json()


def test_a_bad_source_is_refused_and_logs_nothing(server) -> None:
    client, repository = server
    before = repository.count()
    for source, header in (("x" * 65, None), ("bad source", None), ("../etc", None),
                           ("cam-1", "cam-2")):
        response = client.post(
            "/v1/predict", files={"file": ("a.npy", CLIP, "application/x-npy")},
            data={"source": source}, headers={"x-vidmon-source": header} if header else {})
        assert response.status_code == 422, (source, response.text)
        assert "source" in response.json()["detail"]
    assert repository.count() == before


def test_sources_beyond_the_bound_pool_as_other_and_the_admitted_stay(server) -> None:
    client, repository = server
    answers = {}
    for source in ("cam-1", "cam-2", "cam-3", "cam-4", "cam-5", "cam-1"):
        response = client.post("/v1/predict", content=CLIP, headers={
            "content-type": "application/x-npy", "x-vidmon-source": source})
        assert response.status_code == 200
        answers.setdefault(source, []).append(response.json()["source"])
    assert answers == {"cam-1": ["cam-1", "cam-1"], "cam-2": ["cam-2"], "cam-3": ["cam-3"],
                       "cam-4": ["other"], "cam-5": ["other"]}
    assert SourceRepository(repository.engine).admitted() == {"cam-1", "cam-2", "cam-3"}
