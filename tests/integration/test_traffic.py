"""The traffic and label simulator against a real service on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from monitor.settings import ServeSettings, Settings
from monitor.store import PredictionRepository, create_store_engine
from serving.app import create_app
from simulations.scenarios import Scenario, build
from simulations.traffic import TrafficConfig, TrafficSimulator
from serving.background import running_server
from training.registry import RegistrySource


@pytest.fixture
def service(model_store: Settings, tmp_path: Path):
    settings = model_store.model_copy(update={
        "database_url": f"sqlite:///{tmp_path / 'vidmon.db'}", "clip_dir": tmp_path / "clips",
        "serve": ServeSettings(spool_path=tmp_path / "spool.jsonl", clip_sample_rate=1.0)})
    with running_server(create_app(settings, RegistrySource(settings))) as url:
        yield url, settings


def test_hours_of_encoded_traffic_with_late_labels_and_a_lighting_change(service) -> None:
    url, settings = service
    simulator = TrafficSimulator(url, build("lighting", onset=1.0, shift=60.0), TrafficConfig(
        requests_per_hour=16, concurrency=4, label_fraction=1.0, label_delay_hours=1.0))
    first = asyncio.run(simulator.run_hour(0.0))
    assert first.failures == 0 and len(first.sent) == 16
    # Each label comes an hour after its event: by the end of hour 0 only the first event's.
    assert first.labels_sent == 1 and simulator.pending_labels == 15
    second = asyncio.run(simulator.run_hour(1.0))
    assert second.failures == 0
    assert second.labels_sent == 16 and simulator.pending_labels == 15

    engine = create_store_engine(settings.database_url)
    rows = PredictionRepository(engine).get(
        s.prediction_id for s in first.sent + second.sent)
    engine.dispose()
    assert len(rows) == 32
    assert all(r["codec"] == "h264" and r["content_type"] == "video/mp4" for r in rows.values())
    hour0 = [rows[s.prediction_id] for s in first.sent]
    hour1 = [rows[s.prediction_id] for s in second.sent]
    assert all(r["true_label"] == s.true_label for r, s in zip(hour0, first.sent))
    assert hour1[0]["true_label"] == second.sent[0].true_label
    assert all(r["true_label"] is None for r in hour1[1:])
    assert np.mean([r["brightness"] for r in hour1]) > np.mean([r["brightness"] for r in hour0]) + 30
    assert all(r["clip_path"] for r in hour0)  # kept for retraining


def test_novel_events_are_sent_and_their_labels_come_back_unknown(service) -> None:
    url, _ = service
    simulator = TrafficSimulator(url, build("novel_class", share=1.0), TrafficConfig(
        requests_per_hour=6, concurrency=2, label_fraction=1.0, label_delay_hours=0.5))
    result = asyncio.run(simulator.run_hour(0.0))
    assert {s.true_label for s in result.sent} == {"move_diagonal"}
    assert result.failures == 0 and result.labels_sent == 0  # the model has no such class
    assert result.accuracy == 0.0


def test_vidmon_simulate_paces_composed_scenarios_against_a_running_service(
        service, capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import time

    from simulations.cli import main
    from simulations.traffic import parse_scenario

    url, settings = service
    assert parse_scenario("lighting@2+3").onset == 2.0
    assert parse_scenario("lighting@2+3").ramp == 3.0
    started = time.monotonic()
    code = main(["simulate", "--url", url, "--scenario", "lighting@1", "--scenario",
                 "mirror@1", "--hours", "2", "--requests-per-hour", "6", "--concurrency", "2",
                 "--seconds-per-hour", "1.5", "--label-fraction", "1", "--label-delay-hours",
                 "0.5"])
    elapsed = time.monotonic() - started
    assert code == 0
    hours = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [h["hour"] for h in hours] == [0, 1] and all(h["sent"] == 6 for h in hours)
    # Half an hour late: events at 0, 1/6, 2/6 and 3/6 of hour 0 are due by its end.
    assert [h["labels_sent"] for h in hours] == [4, 6]
    assert elapsed >= 2 * 1.5 * 5 / 6  # the last event of each hour left 5/6 into it
    engine = create_store_engine(settings.database_url)
    assert PredictionRepository(engine).count(source="production") == 12
    engine.dispose()
    assert main(["simulate", "--url", url, "--scenario", "nonesuch", "--hours", "1"]) == 2


def test_events_come_from_cameras_in_turn_and_one_camera_can_drift_alone(service) -> None:
    url, settings = service
    simulator = TrafficSimulator(url, Scenario(), TrafficConfig(
        requests_per_hour=12, concurrency=4, label_fraction=0.0, sources=3))
    simulator.source_scenarios = {"camera-1": build("lighting", shift=80.0)}
    result = asyncio.run(simulator.run_hour(0.0))
    assert result.failures == 0
    assert [s.source for s in result.sent] == ["camera-0", "camera-1", "camera-2"] * 4
    engine = create_store_engine(settings.database_url)
    rows = PredictionRepository(engine).get(s.prediction_id for s in result.sent)
    engine.dispose()
    by_camera = {c: [r["brightness"] for r in rows.values() if r["source_id"] == c]
                 for c in ("camera-0", "camera-1", "camera-2")}
    assert all(len(v) == 4 for v in by_camera.values())
    assert np.mean(by_camera["camera-1"]) > max(np.mean(by_camera["camera-0"]),
                                                 np.mean(by_camera["camera-2"])) + 40
