"""Decoding video files into the clips a model takes: the one path for uploads, reference
profiles and training data.

Frames are scaled by FFmpeg as they decode (to the card's :func:`resized_size`) and centre
cropped, so memory grows with the model's input size, not the file's; then
:func:`monitor.preprocess.plan_clips` picks each clip's frames.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

from monitor.card import ModelCard
from monitor.errors import InvalidInput
from monitor.features import VideoMeta
from monitor.preprocess import Segment, centre_crop, plan_clips, resized_size


@dataclass(frozen=True)
class DecodedVideo:
    """The clips of one video (K, T, H, W, 3), where each came from, and the file's facts."""

    clips: np.ndarray
    segments: list[Segment]
    meta: VideoMeta | None
    codec: str | None


def clips_from_frames(frames: np.ndarray, fps: float, card: ModelCard, max_clips: int
                      ) -> tuple[np.ndarray, list[Segment]]:
    """Cut already resized and cropped frames (n, H, W, 3) into the card's clips."""
    try:
        segments = plan_clips(len(frames), fps, card, max_clips)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return np.stack([frames[s.indices] for s in segments]), segments


def decode_video(data: bytes, card: ModelCard, max_frames: int, max_clips: int = 1
                 ) -> DecodedVideo:
    """Decode a video file into the card's clips; raises :class:`InvalidInput` for bad files."""
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError) as exc:
        raise InvalidInput(f"not a readable video file: {exc}") from None
    with container:
        if not container.streams.video:
            raise InvalidInput("the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        source_h, source_w = stream.codec_context.height, stream.codec_context.width
        height, width = resized_size(card, source_h, source_w)
        frames: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                if len(frames) >= max_frames:
                    raise InvalidInput(f"the video has more than {max_frames} frames")
                frames.append(centre_crop(frame.to_ndarray(width=width, height=height,
                                                           format="rgb24"), card))
        except av.FFmpegError as exc:
            if not frames:
                raise InvalidInput(f"the video could not be decoded: {exc}") from None
            # A truncated tail still leaves usable frames; keep what decoded.
        if not frames:
            raise InvalidInput("the video has no decodable frames")
        rate = stream.average_rate or stream.guessed_rate
        meta = VideoMeta(frame_count=len(frames), fps=float(rate) if rate else 0.0,
                         width=source_w, height=source_h)
        codec = stream.codec_context.name
    clips, segments = clips_from_frames(np.stack(frames), meta.fps, card, max_clips)
    return DecodedVideo(np.ascontiguousarray(clips), segments, meta, codec)
