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


def test_the_demo_keeps_what_the_user_set(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    from simulations.demo import DemoConfig, demo_settings

    monkeypatch.setenv("VIDMON_RETRAIN__EPOCHS", "2")
    monkeypatch.setenv("VIDMON_MONITOR__MIN_ROWS", "50")
    monkeypatch.setenv("VIDMON_MONITOR__ALPHA", "0.01")
    monkeypatch.setenv("VIDMON_SERVE__CLIP_SAMPLE_RATE", "0.5")
    settings = demo_settings(Settings(), DemoConfig(output=tmp_path))
    assert settings.retrain.epochs == 2 and settings.monitor.min_rows == 50
    assert settings.monitor.alpha == 0.01 and settings.serve.clip_sample_rate == 0.5
    # what the user left alone takes the demo's values
    assert settings.retrain.min_labeled == DemoConfig().retrain_min_labeled
    assert settings.monitor.window_minutes == 60 and settings.monitor.lateness_s == 0
    assert settings.serve.spool_path == tmp_path.resolve() / "vidmon-spool.jsonl"
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'vidmon.db'}"
