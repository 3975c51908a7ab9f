"""Shared fixtures: every test gets a fresh MLflow store in a temp folder, telemetry off."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from monitor.settings import Settings, TrainSettings  # noqa: E402
from tests.s3server import S3Server  # noqa: E402

if TYPE_CHECKING:
    from monitor.store import PredictionRepository


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e is slow: ``pytest -m 'not slow'`` is the quick loop. The
    multi-host test goes last, so its images build while the others run."""
    for item in items:
        if "e2e" in item.path.parts:
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.path.name == _HOSTS_TEST)


_HOSTS_TEST = "test_hosts.py"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start building the multi-host test's images when it is selected and can run."""
    from tests import hosts

    if any(item.path.name == _HOSTS_TEST for item in session.items) and hosts.usable() is None:
        hosts.prepare_in_background()


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests import hosts

    hosts.finish()


# What vidmon writes in the working directory on its embedded defaults. A test that leaves
# one in the checkout wrote to a user's default store: it must use a temp folder.
_DEFAULT_STORES = ("vidmon.db", "vidmon.db.migrate-lock", "mlflow.db", "mlartifacts", "clips",
                   "evidently-workspace", "vidmon-spool.jsonl", "synthetic-data", "vidmon-demo")
_CHECKOUT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_default_store_in_checkout() -> Iterator[None]:
    """Fail the test that writes vidmon's default stores into the checkout."""
    before = {name for name in _DEFAULT_STORES if (_CHECKOUT / name).exists()}
    yield
    made = sorted(name for name in _DEFAULT_STORES
                  if (_CHECKOUT / name).exists() and name not in before)
    if made:
        pytest.fail(f"this test wrote {', '.join(made)} into {_CHECKOUT}: point its settings "
                    "(or its subprocess's cwd) at a temp folder")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings on a temp MLflow SQLite store with a small, fast training configuration."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return Settings(
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        mlflow_artifacts_dir=tmp_path / "mlartifacts",
        experiment_name="vidmon-test",
        model_name="vidmon-test-model",
        train=TrainSettings(clips_per_class=3, test_clips_per_class=2, epochs=2,
                            batch_size=8, width_multiplier=8),
    )


POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _postgres_reachable() -> bool:
    import sqlalchemy as sa

    engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 for a test module (tests/s3server.py)."""
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    """Whether the machine's PostgreSQL answers; in CI it must."""
    reachable = _postgres_reachable()
    if not reachable and os.environ.get("CI"):
        pytest.fail(f"CI is set but PostgreSQL is not reachable at {POSTGRES_URL}")
    return reachable


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new schema in the machine's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store' / 'vidmon.db'}"
        return
    if not request.getfixturevalue("postgres_available"):
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL} (and CI is not set)")
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def synthetic_card(train: TrainSettings):  # type: ignore[no-untyped-def]
    """The card vidmon's own model gets for the synthetic classes at ``train``'s size."""
    from training.job import training_card
    from training.synthetic import CLASS_NAMES

    return training_card(train, CLASS_NAMES)


def register_random_model(store: Settings, seed: int) -> str:
    """Register an untrained vidmon model; champion if none yet. Returns its version."""
    import mlflow
    import torch

    from training import flavor, registry, tracking
    from training.job import model_config_for
    from training.modelfile import vidmon_network

    card = synthetic_card(store.train)
    torch.manual_seed(seed)
    loaded = vidmon_network(model_config_for(store.train, len(card.labels)))
    experiment_id = tracking.configure_mlflow(store)
    with mlflow.start_run(experiment_id=experiment_id):
        info = flavor.log_model(loaded, card, store.model_name, loaded.architecture.embedding_dim)
    version = str(info.registered_model_version)
    registry.ensure_champion(mlflow.MlflowClient(), store.model_name, version)
    return version


def mlflow_store(root: Path, name: str) -> Settings:
    """Settings on an MLflow store in ``root`` with a small model architecture."""
    return Settings(
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        mlflow_artifacts_dir=root / "mlartifacts",
        experiment_name=f"{name}-experiment",
        model_name=name,
        train=TrainSettings(width_multiplier=8),
    )


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A temp MLflow store with a small, untrained vidmon model registered as champion."""
    store = mlflow_store(tmp_path_factory.mktemp("mlflow"), "vidmon-serving-model")
    register_random_model(store, seed=0)
    return store


@pytest.fixture
def repository(database_url: str) -> Iterator["PredictionRepository"]:
    """A migrated, empty store on each database kind."""
    from monitor.store import PredictionRepository, create_store_engine, upgrade_database

    engine = create_store_engine(database_url)
    upgrade_database(engine)
    yield PredictionRepository(engine)
    engine.dispose()
