"""Cutting a stream of timed frames into the card's clips, causally and in bounded memory.

The card's clip is ``frames`` model frames ``stride / fps`` seconds apart. Model frame k is
taken at ``t0 + k * dt`` from the newest source frame at or before that time (a frame
already seen: nothing waits for the future), converted to the model's size only when some
model frame uses it, and kept in a ring of ``frames`` entries; every ``hop`` model frames
the ring is one clip. Memory is the ring, whatever the length of the video or the stream.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from monitor.card import ModelCard

F = TypeVar("F")


@dataclass(frozen=True)
class TimedClip:
    """One clip of a video or stream: its number, the time it spans (seconds from the
    first frame), its uint8 frames (T, H, W, 3), and when its newest frame arrived
    (``time.monotonic()``, for the lag behind live)."""

    index: int
    start_s: float
    end_s: float
    clip: np.ndarray
    arrived: float


def model_frame_interval(card: ModelCard, uniform_clip_s: float) -> float:
    """Seconds between the model frames of one clip: the card's ``stride / fps``; a card
    that samples each upload uniformly (its clip is the whole upload) has no time scale of
    its own, so a long video or stream is cut into clips of ``uniform_clip_s`` seconds,
    each sampled uniformly (setting ``media.uniform_clip_s``)."""
    if card.sampling_fps is None:
        return uniform_clip_s / card.frames
    return card.stride / card.sampling_fps


class ClipSampler(Generic[F]):
    """Feed frames in time order with :meth:`push`; it returns the clips they complete."""

    def __init__(self, card: ModelCard, hop: int, convert: Callable[[F], np.ndarray],
                 uniform_clip_s: float = 2.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        if hop < 1:
            raise ValueError("the hop must be at least one model frame")
        self.frames = card.frames
        self.hop = hop
        self.dt = model_frame_interval(card, uniform_clip_s)
        self.convert = convert
        self.clock = clock
        self.ring: deque[np.ndarray] = deque(maxlen=card.frames)
        self.model_frames = 0  # model frames taken so far
        self.clips = 0
        self._t0: float | None = None
        self._held: tuple[float, F, float] | None = None  # (time, frame, arrival)
        self._held_array: np.ndarray | None = None
        self._last_end = 0  # model frames covered by the clips given so far

    def push(self, t: float, frame: F) -> list[TimedClip]:
        """A source frame at ``t`` seconds; the clips it completes (usually none)."""
        out: list[TimedClip] = []
        if self._t0 is None:
            self._t0 = t
        elif self._held is not None:
            if t < self._held[0]:  # out-of-order or repeated timestamp: keep the order seen
                t = self._held[0]
            while self._next_time() < t:
                out.extend(self._take())
        self._held, self._held_array = (t, frame, self.clock()), None
        return out

    def finish(self, cover_tail: bool = False) -> list[TimedClip]:
        """The end of the input: the model frames the last frame still covers, and with
        ``cover_tail`` one last clip ending at the end, so every model frame is in a clip
        (a video shorter than one clip is padded with its last frame)."""
        out: list[TimedClip] = []
        if self._held is None:
            return out
        while self._next_time() <= self._held[0]:
            out.extend(self._take())
        if cover_tail and self.model_frames > self._last_end:
            while len(self.ring) < self.frames:
                self.ring.append(self.ring[-1])
            out.append(self._clip(self.model_frames - self.frames))
        return out

    def _next_time(self) -> float:
        assert self._t0 is not None
        return self._t0 + self.model_frames * self.dt

    def _take(self) -> list[TimedClip]:
        assert self._held is not None
        if self._held_array is None:
            self._held_array = self.convert(self._held[1])
        self.ring.append(self._held_array)
        self.model_frames += 1
        first = self.model_frames - self.frames
        if first >= 0 and first % self.hop == 0:
            return [self._clip(first)]
        return []

    def _clip(self, first: int) -> TimedClip:
        assert self._t0 is not None and self._held is not None
        clip = TimedClip(self.clips, round(max(first, 0) * self.dt, 6),
                         round(self.model_frames * self.dt, 6), np.stack(self.ring),
                         self._held[2])
        self.clips += 1
        self._last_end = self.model_frames
        return clip


def sample_clips(frames: Iterator[tuple[float, F]], sampler: ClipSampler[F],
                 cover_tail: bool = False) -> Iterator[TimedClip]:
    """Every clip of ``frames`` (time, frame) pairs, as they complete."""
    for t, frame in frames:
        yield from sampler.push(t, frame)
    yield from sampler.finish(cover_tail)
