"""Shared fixtures: every test gets a fresh MLflow store in a temp folder, telemetry off."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from monitor.settings import Settings, TrainSettings  # noqa: E402


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
