"""The champion/challenger gate, and how concept drift shows in recent labels.

Pure functions over per-clip outcomes, used by the retrain job and its tests.

The gate compares the two models on the *same* held-out clips, so it tests the paired
difference (challenger right minus champion right, clip by clip): most clips are right
for both and cancel, and only the clips one model gets right and the other wrong move the
difference (McNemar's insight). Clips of one video are not independent (a 31-second video
is eight clips that look alike), so the interval comes from a bootstrap that resamples
whole videos: a video of eight clips counts as one draw, not eight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from monitor.estimation.labeled import wilson_interval

GATE_LEVEL = 0.95  # two-sided level of the gate's intervals
RESAMPLES = 4000  # bootstrap draws: the interval's ends move by < 0.003 between seeds


@dataclass(frozen=True)
class PairedDifference:
    """Challenger minus champion accuracy on the same clips, with a 95 % interval from a
    bootstrap over videos; NaN everywhere when there were no clips."""

    champion: float
    challenger: float
    difference: float
    low: float
    high: float
    clips: int
    videos: int
    challenger_only: int  # clips only the challenger got right
    champion_only: int  # clips only the champion got right

    def describe(self) -> str:
        """``+0.120 (95 % interval +0.060 to +0.180; 135 clips of 120 videos)``."""
        return (f"{self.difference:+.3f} ({GATE_LEVEL:.0%} interval {self.low:+.3f} to "
                f"{self.high:+.3f}; {self.clips} clips of {self.videos} videos, "
                f"{self.challenger_only} right only for the challenger, {self.champion_only} "
                f"only for the champion)")


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Share of matches; NaN for no labels."""
    return float((predicted == labels).mean()) if len(labels) else float("nan")


def paired_difference(champion_correct: np.ndarray, challenger_correct: np.ndarray,
                      videos: np.ndarray | None = None, *, resamples: int = RESAMPLES,
                      seed: int = 0) -> PairedDifference:
    """The paired difference of two models' right/wrong on the same clips, its percentile
    bootstrap interval drawn over ``videos`` (each clip its own video when None)."""
    champ = np.asarray(champion_correct, dtype=bool)
    chall = np.asarray(challenger_correct, dtype=bool)
    if champ.shape != chall.shape:
        raise ValueError("both models need an outcome for every clip")
    n = len(champ)
    if n == 0:
        nan = float("nan")
        return PairedDifference(nan, nan, nan, nan, nan, 0, 0, 0, 0)
    groups = np.arange(n) if videos is None else np.unique(
        np.asarray(videos, dtype=object).astype(str), return_inverse=True)[1]
    count = int(groups.max()) + 1
    diff = np.bincount(groups, weights=chall.astype(float) - champ.astype(float),
                       minlength=count)
    size = np.bincount(groups, minlength=count).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(count, np.full(count, 1.0 / count), size=resamples)
    totals = draws @ size
    boot = (draws @ diff) / totals
    tail = (1 - GATE_LEVEL) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    return PairedDifference(
        float(champ.mean()), float(chall.mean()), float(chall.mean() - champ.mean()),
        float(low), float(high), n, count, int(np.sum(chall & ~champ)),
        int(np.sum(champ & ~chall)))


@dataclass(frozen=True)
class GateResult:
    """Champion and challenger on recent and original data, the paired differences with
    their intervals, and the verdict."""

    champion_recent: float
    challenger_recent: float
    champion_original: float
    challenger_original: float
    promote: bool
    reason: str
    recent: PairedDifference | None = None
    original: PairedDifference | None = None
    margin: float | None = None
    tolerance: float | None = None


def gate(recent: PairedDifference, original: PairedDifference, margin: float,
         tolerance: float, relabeled: list[str] | None = None) -> GateResult:
    """Promote only when the challenger is better on the held-out recent videos by at
    least ``margin`` at the low end of the interval, and, on the original test set, the
    low end of the interval loses at most ``tolerance``. The original test leaves out
    ``relabeled`` classes (their original labels are out of date); with no clips left only
    the first rule applies."""
    without = f" (without relabeled {', '.join(relabeled)})" if relabeled else ""
    better = recent.clips > 0 and recent.low >= margin
    kept = original.clips == 0 or original.low >= -tolerance
    if recent.clips == 0:
        reason = "no recent held-out clips to compare the models on"
    elif not better:
        reason = (f"recent accuracy {recent.describe()}: the interval's low end is under "
                  f"the margin {margin:+g}")
    elif not kept:
        reason = (f"original test accuracy{without} {original.describe()}: the interval's "
                  f"low end loses more than the tolerance {tolerance:g}")
    else:
        reason = f"recent accuracy {recent.describe()} clears the margin {margin:+g}"
        reason += (f"; original test{without} {original.describe()} keeps within the "
                   f"tolerance {tolerance:g}" if original.clips else
                   "; no original test clips to check")
    return GateResult(recent.champion, recent.challenger, original.champion,
                      original.challenger, bool(better and kept), reason, recent, original,
                      margin, tolerance)


def relabeled_classes(true: np.ndarray, predicted: np.ndarray, n_classes: int, *,
                      reference_right: np.ndarray, reference_clips: np.ndarray,
                      min_clips: int, ratio: float = 0.5, alpha: float = 0.05,
                      weights: np.ndarray | None = None) -> list[int]:
    """Classes whose recent accuracy fell *significantly below their own reference
    accuracy* (``reference_right`` of ``reference_clips`` per class) and under ``ratio``
    of it: what they look like now means something else (concept drift), so their
    original data no longer describes them. A class the model always got 37 % right is
    weak, not changed. The test is one-sided on the counts: the lower end of Newcombe's
    interval of (reference − recent) above zero, at level ``alpha`` split over the
    classes tested. With ``weights`` (1/π of the labeling queue, which favours likely
    mistakes) a class's recent accuracy is the weighted one, as on the traffic, and its
    count the weights' effective sample size; unweighted, a budget's mistake-rich labels
    would make a class whose blurred clips fail now and then look relabeled."""
    weights = np.ones(len(true)) if weights is None else np.asarray(weights, dtype=float)
    true, predicted = np.asarray(true), np.asarray(predicted)
    tested = [c for c in range(n_classes)
              if np.sum(true == c) >= min_clips and reference_clips[c] > 0]
    if not tested:
        return []
    z = _one_sided_z(alpha / len(tested))
    changed = []
    for c in tested:
        mask = true == c
        w = weights[mask]
        recent = float(np.average(predicted[mask] == c, weights=w))
        effective = float(w.sum() ** 2 / np.square(w).sum())
        before = reference_right[c] / reference_clips[c]
        before_low = wilson_interval(float(reference_right[c]), int(reference_clips[c]), z)[0]
        recent_high = _wilson_high(recent, effective, z)
        lower = (before - recent) - math.hypot(before - before_low, recent_high - recent)
        if lower > 0 and recent < ratio * before:
            changed.append(c)
    return changed


def _one_sided_z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.isf(level))


def _wilson_high(p: float, n: float, z: float) -> float:
    """Upper end of the Wilson interval of a proportion ``p`` over ``n`` (not necessarily
    whole) trials."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return min(1.0, centre + half)
