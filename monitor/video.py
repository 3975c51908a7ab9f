"""Decoding video files into the clip a model takes: the one path for uploads and references.

Frames are resized to the model's input by FFmpeg's scaler as they decode, then sampled
uniformly in time to the model's frame count.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

from monitor.errors import InvalidInput
from monitor.features import VideoMeta


@dataclass(frozen=True)
class InputSize:
    """The model's input: frames, height, width."""

    frames: int
    height: int
    width: int


def sample_indices(available: int, wanted: int) -> np.ndarray:
    """``wanted`` frame indices spread uniformly over ``available`` frames."""
    if available <= 0:
        raise InvalidInput("the video has no decodable frames")
    return np.linspace(0, available - 1, wanted).round().astype(np.int64)


def decode_video(data: bytes, size: InputSize, max_frames: int) -> tuple[np.ndarray, VideoMeta, str]:
    """Decode a video file; returns the model-sized clip, the file's metadata and codec."""
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError) as exc:
        raise InvalidInput(f"not a readable video file: {exc}") from None
    with container:
        if not container.streams.video:
            raise InvalidInput("the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                if len(frames) >= max_frames:
                    raise InvalidInput(f"the video has more than {max_frames} frames")
                frames.append(frame.to_ndarray(width=size.width, height=size.height,
                                               format="rgb24"))
        except av.FFmpegError as exc:
            if not frames:
                raise InvalidInput(f"the video could not be decoded: {exc}") from None
            # A truncated tail still leaves usable frames; keep what decoded.
        if not frames:
            raise InvalidInput("the video has no decodable frames")
        rate = stream.average_rate or stream.guessed_rate
        meta = VideoMeta(frame_count=len(frames), fps=float(rate) if rate else 0.0,
                         width=stream.codec_context.width, height=stream.codec_context.height)
        codec = stream.codec_context.name
    clip = np.stack(frames)[sample_indices(len(frames), size.frames)]
    return np.ascontiguousarray(clip), meta, codec
