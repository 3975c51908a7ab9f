"""Promotion, rollback and polling swap the served model under load, with no failed request."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import mlflow
import pytest
from pydantic import SecretStr

from monitor.settings import ServeSettings
from monitor.store import PredictionRepository, create_store_engine
from serving.app import create_app
from tests.conftest import mlflow_store, register_random_model
from tests.media import npy_bytes, sample_clip
from serving.background import running_server
from training import registry
from training.synthetic import ClipSpec

KEY = "test-admin-key"


@pytest.fixture
def two_versions(tmp_path: Path):
    store = mlflow_store(tmp_path / "mlflow", "swap-model")
    assert register_random_model(store, seed=0) == "1"
    assert register_random_model(store, seed=1) == "2"
    return store.model_copy(update={
        "database_url": f"sqlite:///{tmp_path / 'vidmon.db'}",
        "clip_dir": tmp_path / "clips",
        "admin_key": SecretStr(KEY),
        "serve": ServeSettings(spool_path=tmp_path / "spool.jsonl", model_poll_interval_s=0.3),
    })


class Traffic:
    """Sends predictions back to back from a thread; records (status, version)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.results: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._payload = npy_bytes(sample_clip(spec=ClipSpec(16, 32, 32)))

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                response = client.post("/v1/predict", files={
                    "file": ("c.npy", self._payload, "application/x-npy")})
                version = response.json()["model"]["version"] if response.is_success else None
                self.results.append((response.status_code, version))

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def wait_for(self, version: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.results or self.results[-1][1] != version:
            assert time.monotonic() < deadline, f"never served version {version}"
            time.sleep(0.02)


def test_promote_rollback_and_poll_swap_versions_without_a_failed_request(two_versions) -> None:
    app = create_app(two_versions, registry.RegistrySource(two_versions))
    auth = {"Authorization": f"Bearer {KEY}"}
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as admin:
        with Traffic(url) as traffic:
            traffic.wait_for("1")
            promoted = admin.post("/v1/admin/promote", json={"version": "2"}, headers=auth)
            assert promoted.status_code == 200, promoted.text
            assert promoted.json()["version"] == "2" and promoted.json()["swapped"]
            traffic.wait_for("2")
            rolled = admin.post("/v1/admin/rollback", headers=auth).json()
            assert (rolled["rolled_back_from"], rolled["rolled_back_to"]) == ("2", "1")
            traffic.wait_for("1")
            # A promotion made in the registry alone reaches the server by polling.
            mlflow.set_tracking_uri(two_versions.mlflow_tracking_uri)
            registry.promote(mlflow.MlflowClient(), two_versions.model_name, "2")
            traffic.wait_for("2")
        assert admin.post("/v1/admin/reload", headers=auth).json()["swapped"] is False
        assert admin.get("/readyz").json()["version"] == "2"

    statuses = [status for status, _ in traffic.results]
    assert statuses and set(statuses) == {200}
    versions = [version for _, version in traffic.results]
    changes = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
    assert changes == ["1", "2", "1", "2"]
    engine = create_store_engine(two_versions.database_url)
    store = PredictionRepository(engine)
    assert store.count(model_version="1") == versions.count("1")
    assert store.count(model_version="2") == versions.count("2")
    engine.dispose()


def test_admin_routes_need_the_key_and_refuse_bad_requests(two_versions) -> None:
    app = create_app(two_versions, registry.RegistrySource(two_versions))
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        missing = client.post("/v1/admin/reload")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert client.post("/v1/admin/reload",
                           headers={"Authorization": "Bearer wrong"}).status_code == 403
        auth = {"Authorization": f"Bearer {KEY}"}
        unknown = client.post("/v1/admin/promote", json={"version": "99"}, headers=auth)
        assert unknown.status_code == 404 and "cannot promote version 99" in unknown.text
        assert client.post("/v1/admin/rollback", headers=auth).status_code == 409  # no history
        assert client.get("/readyz").json()["version"] == "1"


def test_admin_routes_are_off_without_a_configured_key(two_versions) -> None:
    settings = two_versions.model_copy(update={"admin_key": None})
    app = create_app(settings, registry.RegistrySource(settings))
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        response = client.post("/v1/admin/rollback", headers={"Authorization": "Bearer x"})
        assert response.status_code == 403 and "disabled" in response.json()["detail"]


def test_cli_promote_and_rollback_move_the_champion(two_versions, monkeypatch, capsys) -> None:
    from simulations.cli import main

    monkeypatch.setenv("VIDMON_DATABASE_URL", two_versions.database_url)  # the rollback alert
    monkeypatch.setenv("VIDMON_MLFLOW_TRACKING_URI", two_versions.mlflow_tracking_uri)
    monkeypatch.setenv("VIDMON_MODEL_NAME", two_versions.model_name)
    client = mlflow.MlflowClient(tracking_uri=two_versions.mlflow_tracking_uri)

    def champion() -> str:
        return str(client.get_model_version_by_alias(two_versions.model_name, "champion").version)

    assert main(["rollback"]) == 2 and "no earlier champion" in capsys.readouterr().err
    assert main(["promote", "2"]) == 0 and champion() == "2"
    assert main(["rollback"]) == 0 and champion() == "1"
    assert '"champion": "1"' in capsys.readouterr().out


def test_admin_retrain_queues_a_decision_listed_in_the_lineage(two_versions) -> None:
    app = create_app(two_versions, registry.RegistrySource(two_versions))
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/v1/admin/retrain").status_code == 401
        queued = client.post("/v1/admin/retrain", headers={"Authorization": f"Bearer {KEY}"})
        assert queued.status_code == 202 and queued.json()["status"] == "pending"
        lineage = client.get("/v1/retrains", params={"triggered_only": True}).json()["items"]
        assert [d["id"] for d in lineage] == [queued.json()["decision_id"]]
        assert lineage[0]["model_version"] == "1" and lineage[0]["status"] == "pending"
        assert lineage[0]["reasons"] == ["requested through /v1/admin/retrain"]


def test_serving_carries_on_when_the_registry_goes_away(two_versions) -> None:
    app = create_app(two_versions, registry.RegistrySource(two_versions))
    mlflow_db = Path(two_versions.mlflow_tracking_uri.removeprefix("sqlite:///"))
    with running_server(app) as url:
        with Traffic(url) as traffic:
            traffic.wait_for("1")
            mlflow_db.rename(mlflow_db.with_suffix(".away"))  # the registry is unreachable
            time.sleep(1.5)  # several polls fail meanwhile
            served = len(traffic.results)
            time.sleep(0.5)
            assert len(traffic.results) > served  # still answering
    mlflow_db.with_suffix(".away").rename(mlflow_db)
    assert {status for status, _ in traffic.results} == {200}
    assert {version for _, version in traffic.results} == {"1"}
