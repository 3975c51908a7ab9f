"""Reference profiles built for a model, with the accuracy estimators fitted beside them."""

from __future__ import annotations

import numpy as np
import torch

from monitor.card import ModelCard
from monitor.settings import TrainSettings
from tests.factories import feature_rows
from training.model import ModelConfig, R2Plus1D
from training.profiling import profile_of
from training.train import predict


def test_a_few_recent_clips_borrow_labeled_clips_for_their_estimators() -> None:
    torch.manual_seed(0)
    card = ModelCard(labels=("a", "b", "c"), frames=4, height=16, width=16)
    network = R2Plus1D(ModelConfig(num_classes=3, widths=(4, 8), blocks=(1, 1))).eval()
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (72, 4, 16, 16, 3), dtype=np.uint8)
    predicted = predict(network, card, clips).labels
    # Right on two clips of three, so accuracy differs between the parts.
    labels = np.where(np.arange(72) % 3 == 0, (predicted + 1) % 3, predicted)
    labels[:12] = predicted[:12]  # the profile's own clips: all right
    own = predict(network, card, clips[:12])
    videos = np.array([f"v{i // 3}" for i in range(72)], dtype=object)  # 3 clips a video
    profile = profile_of(network, card, clips[:12], labels[:12], own,
                         feature_rows(12, rng),
                         more_clips=(clips[12:], labels[12:], videos[12:]),
                         estimator_clips=TrainSettings().estimator_clips, videos=videos[:12])
    assert profile.accuracy == 1.0 and len(profile.table) == 12
    assert profile.table["video_id"].tolist() == list(videos[:12])
    assert profile.estimator is not None
    assert profile.estimator.reference_accuracy == float(np.mean(labels == predicted))
