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
