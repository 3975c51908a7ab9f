"""Verdicts on real encoded clips of the simulator: its camera faults, at the strengths the
demo and ``vidmon simulate`` use, are drift in the first window they are in; clean traffic
is not. Clips go through the project's writer (H.264) and the service's decoder, features
and an (untrained) vidmon network's embeddings, as in production; the predicted class is
the event's class, as a good model's would be."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from monitor.features import FEATURE_NAMES, quality_features_batch
from monitor.report import build_report
from monitor.runtime import ModelRuntime
from monitor.settings import Settings
from monitor.store.records import Window
from monitor.video import DecodeLimits, decode_video
from simulations.scenarios import Scenario, build
from simulations.traffic import draw_event
from training.job import model_config_for, training_card
from training.modelfile import vidmon_network
from training.synthetic import CLASS_NAMES, ClipSpec
from training.video_io import write_video

START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 1, 1, tzinfo=UTC)
WINDOW = 200  # the demo's requests per simulated hour
# Each camera fault and a feature it must move (besides whatever else it moves): the
# demo's blur and three more (a frame-rate drop, in fps and motion, is tested on synthetic
# features in tests/unit/test_report.py; encoding clips costs the suite ~25 ms each).
FAULTS = {"blur": "sharpness", "lighting": "brightness", "sensor_noise": "noise",
          "occlusion": "contrast"}


@pytest.fixture(scope="module")
def camera():  # type: ignore[no-untyped-def]
    """Turns simulated events into production-like windows."""
    settings = Settings()
    card = training_card(settings.train, CLASS_NAMES)
    torch.manual_seed(0)
    network = vidmon_network(model_config_for(settings.train, len(CLASS_NAMES))).network.eval()
    runtime = ModelRuntime(network, card, "m", "1", torch.device("cpu"))
    spec = ClipSpec(settings.train.frames, settings.train.height, settings.train.width)
    folder = Path(tempfile.mkdtemp(prefix="vidmon-verdicts-"))

    def record(scenario: Scenario, n: int, seed: int) -> Window:
        rng = np.random.default_rng(seed)
        rows, clips = [], []
        for i in range(n):
            event = draw_event(scenario, rng, 10.0, spec, settings.train.fps)
            path = folder / f"{i}.mp4"
            write_video(event.frames, path, fps=event.fps)
            video = decode_video(path.read_bytes(), card, DecodeLimits())
            clips.append(video.clips[0])
            rows.append({**quality_features_batch(video.clips[:1], video.meta)[0],
                         "predicted_label": event.label,
                         "confidence": float(rng.uniform(0.7, 1.0)),
                         "true_label": event.label})
        probabilities, embeddings, _ = runtime.predict(np.stack(clips))
        frame = pd.DataFrame(rows)
        frame["probabilities"] = [dict(zip(CLASS_NAMES, p.tolist())) for p in probabilities]
        return Window(frame, embeddings)

    return record


def _report(reference: Window, current: Window):  # type: ignore[no-untyped-def]
    return build_report(reference, current, CLASS_NAMES, model_name="m", model_version="1",
                        window_start=START, window_end=END).summary


@pytest.mark.slow
def test_camera_faults_are_drift_in_their_first_window_and_clean_traffic_is_not(camera) -> None:
    reference = camera(Scenario(), 300, seed=0)
    clean = _report(reference, camera(Scenario(), WINDOW, seed=1))
    assert clean.verdict == "no_drift", clean.reasons
    for name, feature in FAULTS.items():
        summary = _report(reference, camera(build(name), WINDOW, seed=2))
        assert summary.verdict == "drift", (name, summary.reasons)
        assert summary.column_drift[feature]["drifted"], (name, summary.column_drift[feature])
        assert summary.column_drift[feature]["effect"] >= 0.2
    assert set(FEATURE_NAMES) >= set(FAULTS.values())
