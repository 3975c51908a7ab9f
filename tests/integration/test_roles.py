"""Keys per role through a real uvicorn server: prediction clients, labelers and admins;
401 without a key, 403 with a key of too low a role, and everything open when no keys are
set (the embedded default on 127.0.0.1)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from monitor.settings import AuthSettings, MediaSettings, ServeSettings, Settings
from serving.app import create_app
from serving.auth import hash_key
from serving.background import running_server
from tests.colour_model import ColourSource
from tests.media import npy_bytes, sample_clip

CLIP = npy_bytes(sample_clip())
KEYS = {"client": "client-key-1", "labeler": "labeler-key-1", "admin": "admin-key-1"}


def _settings(tmp_path: Path, auth: AuthSettings) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'vidmon.db'}",
                    clip_dir=tmp_path / "clips", evidently_workspace=None,
                    admin_key=SecretStr(KEYS["admin"]), auth=auth,
                    serve=ServeSettings(max_wait_ms=2, spool_path=tmp_path / "s.jsonl"),
                    media=MediaSettings(allowed_urls=[f"file://{tmp_path}/"]))


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[httpx.Client]:
    auth = AuthSettings(client_keys=[hash_key(KEYS["client"])],
                        labeler_keys=[hash_key(KEYS["labeler"])])
    with running_server(create_app(_settings(tmp_path, auth), ColourSource())) as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        yield client


def _as(role: str | None) -> dict[str, str]:
    return {} if role is None else {"authorization": f"Bearer {KEYS[role]}"}


def _predict(client: httpx.Client, role: str | None) -> httpx.Response:
    return client.post("/v1/predict", content=CLIP,
                       headers={"content-type": "application/x-npy", **_as(role)})


def _feedback(client: httpx.Client, role: str | None, prediction_id: str) -> httpx.Response:
    return client.post("/v1/feedback", headers=_as(role), json={
        "labels": [{"prediction_id": prediction_id, "label": "red"}]})


def test_each_role_may_do_its_own_and_what_is_below_it(guarded: httpx.Client,
                                                       tmp_path: Path) -> None:
    client = guarded
    assert _predict(client, None).status_code == 401
    assert "client key" in _predict(client, None).json()["detail"]
    bad = client.post("/v1/predict", content=CLIP, headers={
        "content-type": "application/x-npy", "authorization": "Bearer guessed"})
    assert bad.status_code == 403 and bad.json()["detail"] == "the key is not valid"
    answers = {role: _predict(client, role) for role in KEYS}
    assert {r: a.status_code for r, a in answers.items()} == {
        "client": 200, "labeler": 200, "admin": 200}
    prediction = answers["client"].json()["prediction_id"]

    # Labels drive retraining and the gate: a client key may not post them.
    assert _feedback(client, None, prediction).status_code == 401
    refused = _feedback(client, "client", prediction)
    assert refused.status_code == 403
    assert refused.json()["detail"] == "a client key may not do this: it needs a labeler key"
    assert _feedback(client, "labeler", prediction).json()["stored"] == [prediction]
    assert _feedback(client, "admin", prediction).status_code == 200
    assert client.get("/v1/labeling/queue", headers=_as("client")).status_code == 403
    assert client.get("/v1/labeling/queue", headers=_as("labeler")).status_code != 403

    # Registering a stream makes the service read a URL: admins only.
    stream = {"url": f"file://{tmp_path}/cam.ts", "source": "cam-1"}
    assert client.post("/v1/streams", json=stream, headers=_as("labeler")).status_code == 403
    created = client.post("/v1/streams", json=stream, headers=_as("admin"))
    assert created.status_code == 201, created.text
    assert client.get(f"/v1/streams/{created.json()['id']}",
                      headers=_as("client")).status_code == 200
    assert client.delete(f"/v1/streams/{created.json()['id']}",
                         headers=_as("client")).status_code == 403
    assert client.post("/v1/admin/reload", headers=_as("labeler")).status_code == 403
    assert client.get("/healthz").status_code == 200  # probes need no key


def test_with_no_role_keys_set_predictions_and_labels_stay_open(tmp_path: Path) -> None:
    with running_server(create_app(_settings(tmp_path, AuthSettings()), ColourSource())
                        ) as url, httpx.Client(base_url=url, timeout=60) as client:
        answer = _predict(client, None)
        assert answer.status_code == 200
        assert _feedback(client, None, answer.json()["prediction_id"]).status_code == 200
        assert client.post("/v1/admin/reload").status_code == 401  # admin: always a key


def test_keys_are_configured_as_hashes_which_vidmon_hash_key_prints() -> None:
    with pytest.raises(ValidationError, match="sha256"):
        AuthSettings(labeler_keys=["labeler-key-1"])
    printed = subprocess.run([sys.executable, "-m", "simulations.cli", "hash-key"],
                             input="labeler-key-1\n", capture_output=True, text=True,
                             timeout=60, check=True).stdout.strip()
    assert printed == hash_key("labeler-key-1")
    assert AuthSettings(labeler_keys=[printed]).guards("labeler")
