"""Fitting a model version's accuracy estimators: its labeled reference clips re-rendered
under the corruption bank, run through the model, and handed to
:func:`monitor.estimation.fit_estimator`.

Training, registration and retraining call :func:`fit_for_model` once per version; the
estimator travels with the version's reference profile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import numpy as np
from torch import nn

from monitor.card import ModelCard
from monitor.estimation import AccuracyEstimator, Outputs, ShiftedSet, fit_estimator
from monitor.features import pixel_feature_matrix
from training.corruptions import CORRUPTIONS, Corruption, corrupt_clips
from training.progress import counted
from training.train import Predictions, predict

log = logging.getLogger(__name__)


def outputs_of(predictions: Predictions, clips: np.ndarray, labels: np.ndarray | None
               ) -> Outputs:
    """Model outputs on ``clips`` in the estimators' form."""
    return Outputs(predictions.probabilities, predictions.embeddings,
                   pixel_feature_matrix(clips).astype(np.float64), labels)


def shifted_sets(network: nn.Module, card: ModelCard, clips: np.ndarray, labels: np.ndarray,
                 corruptions: Iterable[Corruption], seed: int = 0) -> list[ShiftedSet]:
    """The labeled clips under every family and level, with the model's outputs on each."""
    jobs = [(c, level) for c in corruptions for level in c.levels]
    sets = []
    for i, (corruption, level) in enumerate(counted(jobs, "corrupted reference windows",
                                                    "window")):
        corrupted = corrupt_clips(clips, corruption, level, seed + i)
        sets.append(ShiftedSet(corruption.family, float(level),
                               outputs_of(predict(network, card, corrupted), corrupted, labels)))
    return sets


def fit_for_model(network: nn.Module, card: ModelCard, clips: np.ndarray, labels: np.ndarray,
                  *, reference: Predictions | None = None,
                  head_data: tuple[np.ndarray, np.ndarray] | None = None,
                  families: Iterable[str] | None = None, max_clips: int = 600,
                  seed: int = 0, videos: np.ndarray | None = None) -> AccuracyEstimator:
    """Fit the estimators of ``network`` on its labeled reference clips (at most
    ``max_clips`` of them, drawn at random, keep the cost bounded) under the corruption
    families named (all of :data:`CORRUPTIONS` by default); ``videos`` keeps the clips of
    one video on one side of the fit's held-out halves."""
    started = time.perf_counter()
    names = list(CORRUPTIONS) if families is None else list(families)
    unknown = sorted(set(names) - set(CORRUPTIONS))
    if unknown:
        raise ValueError(f"unknown corruption families {unknown}; choose from "
                         f"{sorted(CORRUPTIONS)}")
    outputs = reference or predict(network, card, clips)
    if len(clips) > max_clips:
        keep = np.sort(np.random.default_rng(seed).choice(len(clips), max_clips, replace=False))
        clips, labels = clips[keep], labels[keep]
        outputs = Predictions(outputs.logits[keep], outputs.embeddings[keep])
        videos = None if videos is None else np.asarray(videos, dtype=object)[keep]
    shifted = shifted_sets(network, card, clips, labels, [CORRUPTIONS[n] for n in names], seed)
    estimator = fit_estimator(outputs_of(outputs, clips, labels), shifted, len(card.labels),
                              head_data=head_data, seed=seed, groups=videos)
    log.info("accuracy estimators fitted on %d reference clips under %d corrupted windows "
             "(%.0fs); error on held-out families, RMS (near the reference): %s",
             len(clips), len(shifted), time.perf_counter() - started,
             ", ".join(f"{m} {s.rms:.3f} ({s(0.0):.3f})" for m, s in estimator.spreads.items()))
    return estimator
