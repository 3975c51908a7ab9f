"""Decoding video files into the clips a model takes: the one path for uploads, reference
profiles and training data.

Frames are scaled by FFmpeg as they decode (to the card's :func:`resized_size`) and centre
cropped, so memory grows with the model's input size, not the file's; then
:func:`monitor.preprocess.plan_clips` picks each clip's frames.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np

from monitor.card import ModelCard
from monitor.errors import InvalidInput, PayloadTooLarge
from monitor.features import VideoMeta
from monitor.preprocess import Segment, centre_crop, plan_clips, resized_size


@dataclass(frozen=True)
class DecodedVideo:
    """The clips of one video (K, T, H, W, 3), where each came from, and the file's facts."""

    clips: np.ndarray
    segments: list[Segment]
    meta: VideoMeta | None
    codec: str | None


@dataclass(frozen=True)
class DecodeLimits:
    """What decoding one upload may cost; each limit refused names itself. Memory is bounded
    by frames x the model's frame size (frames are scaled as they decode), time by
    ``max_seconds`` and the decoded pixels (frames x width x height of the source)."""

    max_frames: int = 2000
    max_clips: int = 8
    max_pixels: int = 600_000_000
    max_frame_pixels: int = 4096 * 4096
    max_seconds: float = 10.0

    @classmethod
    def trusted(cls, max_frames: int) -> "DecodeLimits":
        """For a team's own dataset files: one clip, only the frame cap (the time and pixel
        limits guard the service against uploads)."""
        return cls(max_frames=max_frames, max_clips=1, max_pixels=2**62,
                   max_frame_pixels=2**62, max_seconds=float("inf"))

    def check_frames(self, frames: int, height: int, width: int) -> None:
        """Refuse ``frames`` frames of ``height`` x ``width`` before decoding them."""
        if height * width > self.max_frame_pixels:
            raise PayloadTooLarge(f"frames of {width}x{height} are over the limit of "
                                  f"{self.max_frame_pixels} pixels a frame (max_frame_pixels)")
        if frames > self.max_frames:
            raise PayloadTooLarge(f"{frames} frames are over the limit of {self.max_frames} "
                                  "(max_video_frames)")
        if frames * height * width > self.max_pixels:
            raise PayloadTooLarge(f"{frames} frames of {width}x{height} are over the limit of "
                                  f"{self.max_pixels} decoded pixels (max_decoded_pixels)")


_FFMPEG_MAX_PIXELS = 2**31 - 1  # the codec option's range


def ffmpeg_message(exc: Exception) -> str:
    """FFmpeg's reason without the file object's repr (which shows a memory address)."""
    return str(getattr(exc, "strerror", None) or type(exc).__name__)


def cut_clips(count: int, fps: float, card: ModelCard, max_clips: int,
              frame: Callable[[int], np.ndarray]) -> tuple[np.ndarray, list[Segment]]:
    """The card's clips over ``count`` frames at ``fps``, built from ``frame(i)`` (a model-size
    frame): each frame a clip needs is fetched once, the others never."""
    try:
        segments = plan_clips(count, fps, card, max_clips)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    needed = {int(i): frame(int(i)) for i in np.unique(np.concatenate(
        [s.indices for s in segments]))}
    return np.stack([np.stack([needed[int(i)] for i in s.indices]) for s in segments]), segments


def decode_video(data: bytes, card: ModelCard, limits: DecodeLimits) -> DecodedVideo:
    """Decode a video file into the card's clips; raises :class:`InvalidInput` for bad files
    and :class:`PayloadTooLarge` past a limit, checked before and while decoding."""
    try:
        # FFmpeg's probe decodes a first frame; its decoder refuses one over max_pixels, so
        # a frame over the limit costs nothing before the header check below names it.
        container = av.open(io.BytesIO(data), mode="r", options={
            "max_pixels": str(min(limits.max_frame_pixels, _FFMPEG_MAX_PIXELS))})
    except (av.FFmpegError, ValueError) as exc:
        raise InvalidInput(f"not a readable video file: {ffmpeg_message(exc)}") from None
    started = time.monotonic()
    with container:
        if not container.streams.video:
            raise InvalidInput("the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        source_h, source_w = stream.codec_context.height, stream.codec_context.width
        limits.check_frames(max(stream.frames, 0), source_h, source_w)
        height, width = resized_size(card, source_h, source_w)
        frames: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                limits.check_frames(len(frames) + 1, frame.height, frame.width)
                if time.monotonic() - started > limits.max_seconds:
                    raise PayloadTooLarge(f"decoding took over the limit of "
                                          f"{limits.max_seconds:g} s (max_decode_seconds)")
                frames.append(centre_crop(frame.to_ndarray(width=width, height=height,
                                                           format="rgb24"), card))
        except av.FFmpegError as exc:
            if not frames:
                raise InvalidInput(f"the video could not be decoded: {ffmpeg_message(exc)}"
                                   ) from None
            # A truncated tail still leaves usable frames; keep what decoded.
        if not frames:
            raise InvalidInput("the video has no decodable frames")
        rate = stream.average_rate or stream.guessed_rate
        meta = VideoMeta(frame_count=len(frames), fps=float(rate) if rate else 0.0,
                         width=source_w, height=source_h)
        codec = stream.codec_context.name
    clips, segments = cut_clips(len(frames), meta.fps, card, limits.max_clips,
                                frames.__getitem__)
    return DecodedVideo(clips, segments, meta, codec)
