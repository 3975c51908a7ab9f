"""Reference profiles: a model's outputs, embeddings and quality features on labeled clips,
with the accuracy estimators fitted on those clips.

Training, registration and retraining all build them here, from clips decoded by the
service's own decoder, so production windows are compared with like."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
from torch import nn

from monitor.card import ModelCard
from monitor.features import quality_features
from monitor.profile import ReferenceProfile
from training.datasets import LoadedClips
from training.estimation import fit_for_model
from training.train import Predictions, predict

log = logging.getLogger(__name__)


def profile_of(network: nn.Module, card: ModelCard, clips: np.ndarray, labels: np.ndarray,
               outputs: Predictions, features: list[dict[str, float]],
               head_clips: tuple[np.ndarray, np.ndarray] | None = None,
               more_clips: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, *,
               estimator_clips: int, videos: np.ndarray) -> ReferenceProfile:
    """A profile from model outputs on labeled clips (of ``videos``) and their quality
    features, with accuracy estimators fitted on at most ``estimator_clips`` of the clips
    (agreement heads trained on ``head_clips``, the model's training clips and classes,
    when given) and of ``more_clips`` (clips, labels, videos), labeled clips that are not
    part of the profile (a retrain's original test set, when the recent clips of the
    profile are few)."""
    profile = ReferenceProfile.build(label_names=card.labels, true_labels=labels,
                                     probabilities=outputs.probabilities,
                                     embeddings=outputs.embeddings, features=features,
                                     videos=videos)
    head_data = None if head_clips is None else (
        predict(network, card, head_clips[0]).embeddings, head_clips[1])
    if more_clips is not None and len(more_clips[1]):
        extra = predict(network, card, more_clips[0])
        clips, labels = np.concatenate([clips, more_clips[0]]), np.concatenate(
            [labels, more_clips[1]])
        videos = np.concatenate([np.asarray(videos, dtype=object),
                                 np.asarray(more_clips[2], dtype=object)])
        outputs = Predictions(np.concatenate([outputs.logits, extra.logits]),
                              np.concatenate([outputs.embeddings, extra.embeddings]))
    try:
        estimator = fit_for_model(network, card, clips, labels, reference=outputs,
                                  head_data=head_data, max_clips=estimator_clips,
                                  videos=videos)
    except ValueError as exc:  # too few clips or classes: the report falls back to CBPE
        log.warning("accuracy estimators not fitted: %s", exc)
        return profile
    return replace(profile, estimator=estimator)


def profile_clips(network: nn.Module, card: ModelCard, part: LoadedClips,
                  outputs: Predictions | None = None,
                  head_clips: tuple[np.ndarray, np.ndarray] | None = None, *,
                  estimator_clips: int) -> ReferenceProfile:
    """The profile of decoded dataset clips (``outputs`` when already computed)."""
    outputs = outputs or predict(network, card, part.clips)
    features = [quality_features(clip, meta) for clip, meta in zip(part.clips, part.metas)]
    return profile_of(network, card, part.clips, part.labels, outputs, features, head_clips,
                      estimator_clips=estimator_clips, videos=part.videos)
