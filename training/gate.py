"""The champion/challenger gate, and how concept drift shows in recent labels.

Pure functions over accuracies and label arrays, used by the retrain job and its tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GateResult:
    """Champion and challenger on recent and original data, and the verdict."""

    champion_recent: float
    challenger_recent: float
    champion_original: float
    challenger_original: float
    promote: bool
    reason: str


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Share of matches; NaN for no labels."""
    return float((predicted == labels).mean()) if len(labels) else float("nan")


def gate(champion_recent: float, challenger_recent: float, champion_original: float,
         challenger_original: float, margin: float, tolerance: float,
         relabeled: list[str] | None = None) -> GateResult:
    """Promote only when better on recent data by ``margin`` and at most ``tolerance`` worse
    on the original test set. The original test leaves out ``relabeled`` classes (their
    original labels are out of date); with none left (NaN) only the first rule applies."""
    gain = challenger_recent - champion_recent
    loss = champion_original - challenger_original
    kept = np.isnan(loss) or loss <= tolerance
    without = f" (without relabeled {', '.join(relabeled)})" if relabeled else ""
    if gain < margin:
        reason = f"recent accuracy gain {gain:+.3f} is under the margin {margin}"
    elif not kept:
        reason = (f"original test accuracy{without} drops {loss:.3f}, over the tolerance "
                  f"{tolerance}")
    else:
        reason = f"recent accuracy {gain:+.3f}, original test{without} {-loss:+.3f}"
    return GateResult(champion_recent, challenger_recent, champion_original,
                      challenger_original, bool(gain >= margin and kept), reason)


def relabeled_classes(true: np.ndarray, predicted: np.ndarray, n_classes: int, *,
                      below: float, min_clips: int,
                      weights: np.ndarray | None = None) -> list[int]:
    """Classes the champion now gets right less often than ``below`` on recent labels (with
    at least ``min_clips`` of them): what they look like now means something else (concept
    drift), so the original data no longer describes them. With ``weights`` (1/π of the
    labeling queue, which favours likely mistakes) a class's accuracy is the weighted one,
    as on the traffic; unweighted, a budget's mistake-rich labels would make a class whose
    blurred clips fail now and then look relabeled."""
    weights = np.ones(len(true)) if weights is None else np.asarray(weights, dtype=float)
    changed = []
    for c in range(n_classes):
        mask = true == c
        if mask.sum() < min_clips:
            continue
        right = np.average(predicted[mask] == c, weights=weights[mask])
        if right < below:
            changed.append(c)
    return changed
