"""The reference profile must look like production uploads, or the codec alone is drift: it
is built from the dataset's video files through the service's own decoder."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path


from monitor.job import run_report_job
from monitor.settings import MonitorSettings, ServeSettings, Settings, TrainSettings
from monitor.store import PredictionRepository, create_store_engine
from monitor.store.reports import ReportRepository
from serving.app import create_app
from simulations.scenarios import Scenario
from simulations.traffic import TrafficConfig, TrafficSimulator
from serving.background import running_server
from training.job import run_training
from training.registry import RegistrySource, profile_loader


def _clean_window_verdict(root: Path) -> dict:
    settings = Settings(
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        mlflow_artifacts_dir=root / "mlartifacts", experiment_name="codec",
        model_name="codec-model", database_url=f"sqlite:///{root / 'vidmon.db'}",
        clip_dir=root / "clips", evidently_workspace=None,
        train=TrainSettings(synthetic_dir=root / "data",
                            clips_per_class=6, test_clips_per_class=10, epochs=1,
                            width_multiplier=8),
        serve=ServeSettings(spool_path=root / "spool.jsonl"))
    run_training(settings)
    with running_server(create_app(settings, RegistrySource(settings))) as url:
        traffic = TrafficSimulator(url, Scenario(), TrafficConfig(
            requests_per_hour=80, concurrency=4, fps=settings.train.fps, label_fraction=0.0))
        assert asyncio.run(traffic.run_hour(0.0)).failures == 0
    engine = create_store_engine(settings.database_url)
    reports = ReportRepository(engine)
    outcome = run_report_job(
        MonitorSettings(interval_s=60, lateness_s=0, window_minutes=30, min_rows=20),
        PredictionRepository(engine), reports, profile_loader(settings),
        now=datetime.now(UTC) + timedelta(seconds=60))
    summary = reports.get(outcome.report_id)["summary"]
    engine.dispose()
    return summary


def test_clean_encoded_traffic_is_no_drift_against_a_reference_decoded_like_uploads(
    tmp_path: Path,
) -> None:
    summary = _clean_window_verdict(tmp_path / "codec")
    assert summary["rows"] == 80
    assert summary["verdict"] == "no_drift", summary["reasons"]
