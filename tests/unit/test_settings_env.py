"""Settings travel to child processes (a retrain started by the monitor) as variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.settings import RetrainSettings, Settings


def test_settings_round_trip_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(database_url="sqlite:///elsewhere.db", evidently_workspace=None,
                        admin_key="s3cret", clip_dir=Path("/data/clips"),
                        mlflow_tracking_uri="http://127.0.0.1:5000",
                        retrain=RetrainSettings(epochs=7, original_clips_per_class=0))
    env = settings.to_env()
    assert env["VIDMON_EVIDENTLY_WORKSPACE"] == "" and env["VIDMON_ADMIN_KEY"] == "s3cret"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///not-this.db")  # ours comes first
    assert Settings() == settings
