"""Reading frames from a file or a URL FFmpeg opens (HTTP, HLS, RTSP, MPEG-TS), one at a
time, with each frame's time; and converting a frame to the model's size."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import av
import numpy as np

from monitor.card import ModelCard
from monitor.errors import InvalidInput, PayloadTooLarge
from monitor.features import VideoMeta
from monitor.preprocess import centre_crop, resized_size
from monitor.video import ffmpeg_message


@dataclass(frozen=True)
class MediaInfo:
    """What the container says before decoding: duration (None when it does not say, as
    for live streams), frame size and codec."""

    duration_s: float | None
    width: int
    height: int
    fps: float
    codec: str


@contextmanager
def open_media(location: str, timeout_s: float = 10.0,
               max_frame_pixels: int = 4096 * 4096) -> Iterator[av.container.InputContainer]:
    """Open a video by path or URL; :class:`InvalidInput` when FFmpeg cannot, or when it
    holds no video. ``timeout_s`` bounds the open and each read on a network."""
    try:
        container = av.open(location, mode="r", timeout=(timeout_s, timeout_s), options={
            "max_pixels": str(min(max_frame_pixels, 2**31 - 1)), "rw_timeout":
            str(int(timeout_s * 1_000_000))})
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InvalidInput(f"cannot open the video: {ffmpeg_message(exc)}") from None
    try:
        if not container.streams.video:
            raise InvalidInput("the file has no video stream")
        yield container
    finally:
        container.close()


def media_info(container: av.container.InputContainer) -> MediaInfo:
    """The container's facts about its first video stream."""
    stream = container.streams.video[0]
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    rate = stream.average_rate or stream.guessed_rate
    return MediaInfo(duration, stream.codec_context.width, stream.codec_context.height,
                     float(rate) if rate else 0.0, stream.codec_context.name)


def clip_meta(info: MediaInfo, clip_seconds: float) -> VideoMeta:
    """The file facts logged with each clip of a long video or stream: the source's rate
    and size, and the clip's own length (not the recording's, which would read as drift
    against reference clips)."""
    return VideoMeta(frame_count=max(1, round(clip_seconds * (info.fps or 1))), fps=info.fps,
                     width=info.width, height=info.height)


def timed_frames(container: av.container.InputContainer, max_frame_pixels: int,
                 max_seconds: float | None = None) -> Iterator[tuple[float, av.VideoFrame]]:
    """The first video stream's frames with their time in seconds from its start (frames
    without a timestamp are placed at the stream's rate). :class:`PayloadTooLarge` past
    ``max_seconds`` of video or a frame over ``max_frame_pixels``; a decoding error after
    the first frame ends the stream there (a truncated tail)."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    start, count = None, 0
    try:
        for frame in container.decode(stream):
            if frame.width * frame.height > max_frame_pixels:
                raise PayloadTooLarge(f"frames of {frame.width}x{frame.height} are over the "
                                      f"limit of {max_frame_pixels} pixels a frame")
            t = frame.time if frame.time is not None else count / rate
            start = t if start is None else start
            if max_seconds is not None and t - start > max_seconds:
                raise PayloadTooLarge(f"the video is longer than the limit of "
                                      f"{max_seconds:g} s (media.max_video_seconds)")
            count += 1
            yield t - start, frame
    except av.FFmpegError as exc:
        if count == 0:
            raise InvalidInput(f"the video could not be decoded: {ffmpeg_message(exc)}"
                               ) from None


def frame_converter(card: ModelCard) -> Callable[[av.VideoFrame], np.ndarray]:
    """A decoded frame -> the card's uint8 (H, W, 3): scaled by FFmpeg, centre cropped."""
    def convert(frame: av.VideoFrame) -> np.ndarray:
        height, width = resized_size(card, frame.height, frame.width)
        return np.ascontiguousarray(centre_crop(
            frame.to_ndarray(width=width, height=height, format="rgb24"), card))
    return convert


def allowed_location(url: str, allowed: list[str]) -> bool:
    """Whether vidmon may read ``url``: it lies under one of the ``allowed`` prefixes, by
    scheme, host and path (so ``http://host:80@elsewhere/`` is not under ``http://host:80``,
    and a file path is compared after resolving ``..`` and links)."""
    target = urlsplit(url)
    if not target.scheme or target.scheme in {"concat", "subfile", "pipe", "data"}:
        return False
    for prefix in allowed:
        base = urlsplit(prefix)
        if base.scheme != target.scheme:
            continue
        if target.scheme == "file":
            root, path = os.path.realpath(base.path), os.path.realpath(target.path)
            if path == root or path.startswith(root.rstrip("/") + "/"):
                return True
        elif (base.netloc.lower() == target.netloc.lower()
              and target.path.startswith(base.path)):
            return True
    return False


def location_for_ffmpeg(url: str) -> str:
    """A ``file://`` URL as the path FFmpeg opens; other URLs as they are."""
    parts = urlsplit(url)
    return parts.path if parts.scheme == "file" else url
