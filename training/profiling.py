"""Reference profiles: a model's outputs, embeddings and quality features on labeled clips.

Training, registration and retraining all build them here, from clips decoded by the
service's own decoder, so production windows are compared with like."""

from __future__ import annotations

import numpy as np
from torch import nn

from monitor.card import ModelCard
from monitor.features import quality_features
from monitor.profile import ReferenceProfile
from training.datasets import LoadedClips
from training.train import Predictions, predict


def profile_of(card: ModelCard, labels: np.ndarray, outputs: Predictions,
               features: list[dict[str, float]]) -> ReferenceProfile:
    """A profile from model outputs on labeled clips and their quality features."""
    return ReferenceProfile.build(label_names=card.labels, true_labels=labels,
                                  probabilities=outputs.probabilities,
                                  embeddings=outputs.embeddings, features=features)


def profile_clips(network: nn.Module, card: ModelCard, part: LoadedClips,
                  outputs: Predictions | None = None) -> ReferenceProfile:
    """The profile of decoded dataset clips (``outputs`` when already computed)."""
    outputs = outputs or predict(network, card, part.clips)
    features = [quality_features(clip, meta) for clip, meta in zip(part.clips, part.metas)]
    return profile_of(card, part.labels, outputs, features)
