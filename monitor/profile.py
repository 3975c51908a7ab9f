"""The reference profile: what the model saw and said on held-out data when it was trained.

Monitoring compares production windows against it. One row per clip: true and predicted
label, confidence, per-class probabilities and the quality features; the embeddings sit
beside the table as a float32 matrix in the same row order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from monitor.estimation import AccuracyEstimator

TABLE_FILE = "profile.parquet"
EMBEDDINGS_FILE = "embeddings.npy"
META_FILE = "profile.json"


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) over the last axis: one value per probability vector."""
    return -(probabilities * np.log(np.clip(probabilities, 1e-12, 1.0))).sum(axis=-1)


def probability_column(label: str) -> str:
    """Name of the probability column of one class."""
    return f"prob_{label}"


@dataclass(frozen=True)
class ReferenceProfile:
    """Table of per-clip outputs and features, plus the matching embeddings, and the
    accuracy estimators fitted on these clips (None for a profile made before them)."""

    table: pd.DataFrame
    embeddings: np.ndarray
    label_names: tuple[str, ...]
    estimator: "AccuracyEstimator | None" = None

    def __post_init__(self) -> None:
        if len(self.table) != len(self.embeddings):
            raise ValueError(
                f"{len(self.table)} rows but {len(self.embeddings)} embeddings in the profile"
            )

    @classmethod
    def build(
        cls,
        *,
        label_names: tuple[str, ...],
        true_labels: np.ndarray,
        probabilities: np.ndarray,
        embeddings: np.ndarray,
        features: list[dict[str, float]],
    ) -> "ReferenceProfile":
        """Assemble a profile from model outputs and per-clip quality features."""
        names = np.asarray(label_names)
        predicted = probabilities.argmax(axis=1)
        table = pd.DataFrame({
            "true_label": names[true_labels],
            "predicted_label": names[predicted],
            "confidence": probabilities.max(axis=1),
        })
        for i, label in enumerate(label_names):
            table[probability_column(label)] = probabilities[:, i]
        table = pd.concat([table, pd.DataFrame(features)], axis=1)
        return cls(table, embeddings.astype(np.float32), tuple(label_names))

    @property
    def accuracy(self) -> float:
        """Share of rows whose prediction matches the true label."""
        return float((self.table["true_label"] == self.table["predicted_label"]).mean())

    def save(self, folder: str | Path) -> Path:
        """Write the table (Parquet), embeddings (npy) and label names (JSON) to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.table.to_parquet(folder / TABLE_FILE, index=False)
        np.save(folder / EMBEDDINGS_FILE, self.embeddings)
        meta = {"label_names": list(self.label_names), "rows": len(self.table),
                "embedding_dim": int(self.embeddings.shape[1])}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2))
        if self.estimator is not None:
            self.estimator.save(folder)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "ReferenceProfile":
        """Read a profile written by :meth:`save`."""
        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        table = pd.read_parquet(folder / TABLE_FILE)
        embeddings = np.load(folder / EMBEDDINGS_FILE, allow_pickle=False)
        from monitor.estimation import AccuracyEstimator  # it measures with this module

        return cls(table, embeddings, tuple(meta["label_names"]),
                   AccuracyEstimator.load(folder))
