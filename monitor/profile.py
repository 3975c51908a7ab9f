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
        videos: np.ndarray | None = None,
    ) -> "ReferenceProfile":
        """Assemble a profile from model outputs and per-clip quality features; ``videos``
        names each clip's video (clips of one video share it), each clip its own video
        when None."""
        names = np.asarray(label_names)
        predicted = probabilities.argmax(axis=1)
        table = pd.DataFrame({
            "true_label": names[true_labels],
            "predicted_label": names[predicted],
            "confidence": probabilities.max(axis=1),
        })
        if videos is not None:
            if len(videos) != len(table):
                raise ValueError(f"{len(videos)} video ids for {len(table)} clips")
            table["video_id"] = [str(v) for v in videos]
        for i, label in enumerate(label_names):
            table[probability_column(label)] = probabilities[:, i]
        table = pd.concat([table, pd.DataFrame(features)], axis=1)
        return cls(table, embeddings.astype(np.float32), tuple(label_names))

    @property
    def videos(self) -> np.ndarray:
        """Each row's video (its row number for a profile without video ids)."""
        if "video_id" in self.table:
            return self.table["video_id"].astype(str).to_numpy()
        return np.arange(len(self.table)).astype(str)

    def class_accuracy(self) -> tuple[np.ndarray, np.ndarray]:
        """Per class of ``label_names``: (rows right, rows) of the reference."""
        index = {c: i for i, c in enumerate(self.label_names)}
        true = self.table["true_label"].map(index).to_numpy()
        right = (self.table["true_label"] == self.table["predicted_label"]).to_numpy()
        n = len(self.label_names)
        return (np.bincount(true[right], minlength=n)[:n].astype(int),
                np.bincount(true, minlength=n)[:n].astype(int))

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
