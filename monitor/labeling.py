"""The labeling queue: which predictions a labeler should label next.

Each call considers the predictions of the serving version that arrived in the window now
filling and were not considered before: it estimates each one's chance of being wrong (the
version's error model, sharpened by labels already back for its predicted class), turns
that into an inclusion probability with a uniform floor, and flips each prediction's coin
once (see :mod:`monitor.estimation.labeled`). Chosen predictions are handed out oldest
first, each exactly once; those beyond ``limit`` wait for the next call. The report then
weighs the labels by their inclusion probabilities, so a few of them give an unbiased
accuracy with an interval.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import numpy as np

from monitor.clock import Clock
from monitor.estimation.base import window_outputs
from monitor.estimation.labeled import inclusion_probabilities
from monitor.job import ProfileLoader, window_end_for
from monitor.settings import MonitorSettings
from monitor.store.labeling import LabelingRepository, QueuedRow

def sharpened_p_wrong(p_wrong: np.ndarray, predicted: list[str],
                      class_errors: dict[str, tuple[int, int]], strength: float) -> np.ndarray:
    """Each prediction's chance of being wrong, moved towards the error rate labels have
    shown for its predicted class: (strength·e + wrong) / (strength + labeled). Labels
    show what no label-free estimate can (a class that now means something else), and the
    queue then samples where they point."""
    e = np.asarray(p_wrong, dtype=float)
    labeled = np.array([class_errors.get(c, (0, 0))[0] for c in predicted], dtype=float)
    wrong = np.array([class_errors.get(c, (0, 0))[1] for c in predicted], dtype=float)
    return (strength * e + wrong) / (strength + labeled)


class LabelingQueue:
    """Hands out predictions to label; safe to call from many threads and replicas."""

    def __init__(self, repository: LabelingRepository, settings: MonitorSettings,
                 load_profile: ProfileLoader, clock: Clock, seed: int | None = None
                 ) -> None:
        self.repository = repository
        self.settings = settings
        self.load_profile = load_profile
        self.clock = clock
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    def window_start(self, now: datetime) -> datetime:
        """Start of the window now filling (the next one to be reported)."""
        return window_end_for(now - timedelta(seconds=self.settings.lateness_s),
                              self.settings.interval_s)

    def next(self, model_name: str, model_version: str, limit: int) -> list[QueuedRow]:
        """Up to ``limit`` predictions to label, none handed out before."""
        now = self.clock()
        since = self.window_start(now)
        with self._lock:
            owed = self.repository.owed(model_name, model_version, since, limit)
            if len(owed) < limit:
                self._consider(model_name, model_version, since, limit - len(owed))
                owed = self.repository.owed(model_name, model_version, since, limit)
            return self.repository.serve(owed, now)

    def _consider(self, model_name: str, model_version: str, since: datetime, budget: int
                  ) -> None:
        """Flip the coins of the window's new predictions, ``budget`` chosen in expectation."""
        window = self.repository.candidates(model_name, model_version, since,
                                            self.settings.queue_max_candidates)
        if not len(window):
            return
        profile = self.load_profile(model_name, model_version)
        estimator = profile.estimator
        outputs = window_outputs(window.frame, window.embeddings, profile.label_names)
        p_wrong = (1.0 - estimator.p_correct(outputs) if estimator is not None
                   else 1.0 - outputs.confidence)
        predicted = window.frame["predicted_label"].tolist()
        lookback = since - timedelta(seconds=self.settings.interval_s)
        p_wrong = sharpened_p_wrong(
            p_wrong, predicted, self.repository.class_errors(model_name, model_version,
                                                              lookback),
            self.settings.queue_prior_strength)
        inclusion = inclusion_probabilities(p_wrong, budget, self.settings.queue_floor)
        chosen = self._rng.random(len(inclusion)) < inclusion
        self.repository.consider(window.frame["id"].tolist(), p_wrong.tolist(),
                                 inclusion.tolist(), chosen.tolist())
