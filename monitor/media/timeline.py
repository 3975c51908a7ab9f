"""A video's timeline: the runs of clips whose label holds, and its label overall."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ClipAnswer:
    """One clip's answer and the time it spans (seconds from the start)."""

    start_s: float
    end_s: float
    label: str
    confidence: float


@dataclass(frozen=True)
class TimelineSegment:
    """Consecutive clips with one label: from the first's start to the last's end."""

    start_s: float
    end_s: float
    label: str
    mean_confidence: float
    clips: int


def timeline(clips: Iterable[ClipAnswer]) -> list[TimelineSegment]:
    """Merge clips (in time order) into segments where the label holds."""
    segments: list[TimelineSegment] = []
    run: list[ClipAnswer] = []

    def close() -> None:
        if run:
            segments.append(TimelineSegment(
                run[0].start_s, run[-1].end_s, run[0].label,
                round(sum(c.confidence for c in run) / len(run), 6), len(run)))

    for clip in clips:
        if run and clip.label != run[0].label:
            close()
            run = []
        run.append(clip)
    close()
    return segments


def overall_label(labels: Sequence[str], probability_sums: Sequence[float]
                  ) -> tuple[str, float] | None:
    """The video's label and confidence from its clips' summed probabilities (the mean
    clip's answer, as for an upload of several clips); None before any clip."""
    total = sum(probability_sums)
    if total <= 0:
        return None
    best = max(range(len(labels)), key=lambda i: probability_sums[i])
    return labels[best], probability_sums[best] / total

