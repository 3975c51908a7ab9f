"""The compose topology without Docker: the machine's PostgreSQL, a real ``mlflow server``
on 127.0.0.1 with a PostgreSQL backend, two ``vidmon serve`` and two ``vidmon monitor``
processes. Requests spread over both APIs land in one store, one monitor acts per window,
and a model promoted through one API is served by both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import POSTGRES_URL
from tests.media import npy_bytes, sample_clip
from tests.waiting import free_port
from training.synthetic import ClipSpec

ADMIN_KEY = "topology-key"
SPEC = ClipSpec(8, 16, 16)


def _wait(check, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


class Processes:
    """Child processes with their output in files; stopped with SIGTERM, then killed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=self.folder)
        self.running[name] = process
        return process

    def output(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def run(self, name: str, command: list[str], env: dict[str, str]) -> None:
        code = self.start(name, command, env).wait(300)
        assert code == 0, self.output(name)[-3000:]

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def databases(postgres_available: bool) -> Iterator[tuple[str, str]]:
    """A fresh database for the store and one for MLflow (their Alembic tables would clash)."""
    if not postgres_available:
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL} (and CI is not set)")
    suffix = uuid.uuid4().hex[:10]
    names = (f"vidmon_topology_{suffix}", f"mlflow_topology_{suffix}")
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for name in names:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{names[0]}", f"{base}/{names[1]}"
    finally:
        with admin.connect() as connection:
            for name in names:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_two_apis_and_two_monitors_share_one_store_and_one_registry(
        databases: tuple[str, str], tmp_path: Path) -> None:
    store_url, mlflow_url = databases
    processes = Processes(tmp_path)
    vidmon = [sys.executable, "-m", "simulations.cli"]
    mlflow_port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
           "VIDMON_DATABASE_URL": store_url,
           "VIDMON_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
           "VIDMON_CLIP_DIR": str(tmp_path / "clips"), "VIDMON_EVIDENTLY_WORKSPACE": "",
           "VIDMON_ADMIN_KEY": ADMIN_KEY, "VIDMON_LOG_LEVEL": "WARNING",
           "VIDMON_TRAIN": json.dumps({"clips_per_class": 3, "test_clips_per_class": 2,
                                       "epochs": 1, "width_multiplier": 8, "batch_size": 16,
                                       "frames": SPEC.frames, "height": SPEC.height,
                                       "width": SPEC.width,
                                       "synthetic_dir": str(tmp_path / "data")}),
           "VIDMON_SERVE__MODEL_POLL_INTERVAL_S": "0.5",
           "VIDMON_MONITOR": json.dumps({"interval_s": 2, "window_minutes": 5, "min_rows": 5,
                                         "lease_ttl_s": 3}),
           "VIDMON_RETRAIN__AUTO_START": "false"}
    try:
        processes.start("mlflow", [sys.executable, "-m", "mlflow", "server",
                                   "--backend-store-uri", mlflow_url,
                                   "--artifacts-destination", str(tmp_path / "artifacts"),
                                   "--serve-artifacts", "--host", "127.0.0.1",
                                   "--port", str(mlflow_port)], env)
        _wait(lambda: httpx.get(f"http://127.0.0.1:{mlflow_port}/health").status_code == 200,
              90, "the MLflow server")
        processes.run("train-1", [*vidmon, "train"], env)  # version 1, the champion
        processes.run("train-2", [*vidmon, "train", "--seed", "1"], env)  # version 2

        ports = [free_port(), free_port()]
        for i, port in enumerate(ports):
            processes.start(f"api-{i}", [*vidmon, "serve", "--port", str(port)], env)
        for i in range(2):
            processes.start(f"monitor-{i}", [*vidmon, "monitor"], env)
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url in urls:
            _wait(lambda url=url: httpx.get(f"{url}/readyz").status_code == 200, 120,
                  f"{url} to be ready")

        # Requests spread over both APIs land in one store.
        ids = []
        for i in range(20):
            clip = sample_clip(("move_left", "steady")[i % 2], seed=i, spec=SPEC)
            response = httpx.post(f"{urls[i % 2]}/v1/predict", timeout=60,
                                  files={"file": ("clip.npy", npy_bytes(clip))})
            assert response.status_code == 200, response.text
            ids.append(response.json()["prediction_id"])
        engine = sa.create_engine(store_url)

        def stored() -> int:
            with engine.connect() as connection:
                return connection.execute(sa.text(
                    "SELECT count(*) FROM predictions WHERE source = 'production'")).scalar_one()
        _wait(lambda: stored() == 20, 30, "20 rows in the store")

        # One monitor acts per window: reports arrive, each window once, from one process.
        def windows() -> list[tuple]:
            with engine.connect() as connection:
                return connection.execute(sa.text(
                    "SELECT model_version, window_end FROM reports")).all()
        _wait(lambda: len(windows()) >= 3, 60, "three report windows")
        reported = windows()
        assert len(reported) == len(set(reported))
        # Either API serves every report, whichever monitor wrote it.
        totals = {httpx.get(f"{url}/v1/reports", params={"until": max(
            w for _, w in reported).isoformat(), "limit": 1}).json()["total"] for url in urls}
        assert totals == {len(reported) - 1}  # until is exclusive: the newest is left out
        acting = [i for i in range(2) if '"status": "reported"' in processes.output(f"monitor-{i}")]
        assert len(acting) == 1, [processes.output(f"monitor-{i}")[-500:] for i in range(2)]
        with engine.connect() as connection:
            holder = connection.execute(sa.text("SELECT holder FROM leases")).scalar_one()
        assert f":{processes.running[f'monitor-{acting[0]}'].pid}:" in holder

        # A model promoted through one API is served by both.
        promoted = httpx.post(f"{urls[0]}/v1/admin/promote", json={"version": "2"}, timeout=60,
                              headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert promoted.status_code == 200, promoted.text
        for url in urls:
            _wait(lambda url=url: httpx.get(f"{url}/readyz").json()["version"] == "2", 60,
                  f"{url} to serve version 2")
        answer = httpx.post(f"{urls[1]}/v1/predict", timeout=60, files={
            "file": ("clip.npy", npy_bytes(sample_clip("steady", seed=99, spec=SPEC)))})
        assert answer.json()["model"]["version"] == "2"
        engine.dispose()
    finally:
        processes.stop_all()
