"""Builders of test data."""

from __future__ import annotations

import math

import numpy as np

from monitor.features import FEATURE_NAMES
from monitor.store import PredictionRecord
from monitor.store.records import encode_embedding


def make_record(i: int = 0, **overrides) -> PredictionRecord:
    """A production record with a recognisable embedding."""
    values = dict(
        model_name="m", model_version="1", predicted_label="move_left", confidence=0.9,
        entropy=0.3, probabilities={"move_left": 0.9, "move_right": 0.1},
        embedding=encode_embedding(np.arange(8, dtype=np.float32) + i),
        features={name: float(i) for name in FEATURE_NAMES} | {"fps": math.nan},
        content_type="video/mp4", size_bytes=1000 + i, codec="h264",
    )
    values.update(overrides)
    return PredictionRecord(**values)


LABELS = ("a", "b", "c")


def feature_rows(n: int, rng: np.random.Generator, brightness: float = 100.0) -> list[dict]:
    """Quality features like a camera's: every feature varies, brightness can be moved."""
    rows = []
    for _ in range(n):
        row = {name: float(rng.normal(10, 2)) for name in FEATURE_NAMES}
        row["brightness"] = float(rng.normal(brightness, 5))
        row.update(frame_count=16.0, fps=8.0, width=32.0, height=32.0, duration=2.0)
        rows.append(row)
    return rows


def embeddings_for(labels: np.ndarray, rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    """16-d embeddings clustered by class."""
    centres = np.array([LABELS.index(str(label)) * 3.0 for label in labels])
    return (rng.normal(0, 1, (len(labels), 16)) + centres[:, None] + shift).astype(np.float32)


def reference_profile(n: int = 300, seed: int = 0):
    """A profile of a model that is right 95% of the time."""
    from monitor.profile import ReferenceProfile

    rng = np.random.default_rng(seed)
    true = rng.integers(0, 3, n)
    predicted = np.where(rng.random(n) < 0.95, true, rng.integers(0, 3, n))
    probabilities = np.full((n, 3), 0.05)
    probabilities[np.arange(n), predicted] = 0.9
    return ReferenceProfile.build(
        label_names=LABELS, true_labels=true, probabilities=probabilities,
        embeddings=embeddings_for(np.array(LABELS)[predicted], rng),
        features=feature_rows(n, rng))


def production_records(n: int, start, seed: int, brightness: float = 100.0,
                       model_version: str = "1", spacing_s: float = 1.0) -> list[PredictionRecord]:
    """Production predictions, one every ``spacing_s`` seconds from ``start``."""
    from datetime import timedelta

    rng = np.random.default_rng(seed)
    labels = np.array(LABELS)[rng.integers(0, 3, n)]
    embeddings = embeddings_for(labels, rng)
    features = feature_rows(n, rng, brightness)
    return [PredictionRecord(
        model_name="m", model_version=model_version, predicted_label=str(labels[i]),
        confidence=0.9, entropy=0.4, probabilities={c: 0.05 for c in LABELS} | {labels[i]: 0.9},
        embedding=encode_embedding(embeddings[i]), features=features[i],
        created_at=start + timedelta(seconds=i * spacing_s)) for i in range(n)]
