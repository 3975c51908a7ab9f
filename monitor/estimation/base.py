"""What every estimator works on (a model's outputs on a set of clips) and returns (an
estimate with an interval)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from monitor.features import PIXEL_FEATURES

Z95 = 1.959963984540054
COMBINED = "combined"  # the fitted estimators, weighted by their held-out errors
HEADLINE = "label_free"  # the combination and the reweighted reference, the report's number


@dataclass(frozen=True)
class Estimate:
    """An accuracy estimate, its 95 % interval, and the method that produced it."""

    method: str
    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def with_interval(method: str, value: float, spread: float, n: int) -> Estimate:
    """``value`` with a 95 % interval from two sources of error: how far this method has
    been off on shifts it was not fitted on (``spread``, a root mean square), and the
    window's own sampling error (binomial, ``n`` clips)."""
    value = float(min(max(value, 0.0), 1.0))
    sampling = value * (1.0 - value) / max(n, 1)
    half = Z95 * math.sqrt(spread ** 2 + sampling)
    return Estimate(method, value, max(0.0, value - half), min(1.0, value + half))


@dataclass(frozen=True)
class Outputs:
    """A model's outputs on a set of clips: class probabilities (n, C), embeddings (n, d)
    and pixel quality features (n, F), with true class indices when they are known."""

    probabilities: np.ndarray
    embeddings: np.ndarray
    features: np.ndarray
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.probabilities)
        if len(self.embeddings) != n or len(self.features) != n or (
                self.labels is not None and len(self.labels) != n):
            raise ValueError("probabilities, embeddings, features and labels need one row "
                             "per clip each")

    def __len__(self) -> int:
        return len(self.probabilities)

    @property
    def predicted(self) -> np.ndarray:
        """Predicted class index per clip."""
        return self.probabilities.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        """Probability of the predicted class per clip."""
        return self.probabilities.max(axis=1)

    @property
    def correct(self) -> np.ndarray:
        """1.0 where the prediction is right (needs labels)."""
        if self.labels is None:
            raise ValueError("these outputs have no true labels")
        return (self.predicted == self.labels).astype(float)

    @property
    def accuracy(self) -> float:
        """Share of right predictions (needs labels)."""
        return float(self.correct.mean())

    def take(self, index: np.ndarray) -> "Outputs":
        """The rows at ``index``."""
        return Outputs(self.probabilities[index], self.embeddings[index], self.features[index],
                       None if self.labels is None else self.labels[index])



def window_outputs(frame: pd.DataFrame, embeddings: np.ndarray, label_names: tuple[str, ...]
                   ) -> Outputs:
    """A stored window's rows (a ``probabilities`` column of dicts, the pixel features and
    the embeddings in row order) as :class:`Outputs`; true labels where the row has one a
    known class (-1 for other labels, NaN-free: unlabeled rows get -1 too)."""
    probabilities = np.array([[float(p.get(c, 0.0)) for c in label_names]
                              for p in frame["probabilities"]], dtype=float).reshape(
                                  len(frame), len(label_names))
    index = {c: i for i, c in enumerate(label_names)}
    labels = np.array([index.get(t, -1) if isinstance(t, str) else -1
                       for t in frame["true_label"]], dtype=np.int64)
    features = frame[list(PIXEL_FEATURES)].to_numpy(dtype=float)
    return Outputs(probabilities, np.asarray(embeddings), features, labels)
