"""Turn an upload (a video file or a raw ``.npy`` clip) into the clip the model takes.

Videos are decoded with PyAV, every frame resized to the model's input by FFmpeg's scaler
as it is decoded, then sampled uniformly in time to the model's frame count.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np
import torch
import torch.nn.functional as F

from monitor.errors import InvalidInput, UnsupportedMediaType
from monitor.features import VideoMeta

NPY_MAGIC = b"\x93NUMPY"
NPY_TYPES = {"application/x-npy", "application/npy", "application/octet-stream"}
VIDEO_TYPES_EXTRA = {"image/gif", "application/mp4", "application/x-matroska",
                     "application/octet-stream"}


@dataclass(frozen=True)
class InputSize:
    """The model's input: frames, height, width."""

    frames: int
    height: int
    width: int


@dataclass(frozen=True)
class DecodedClip:
    """A clip ready for the model, with what the upload said about itself."""

    clip: np.ndarray
    meta: VideoMeta | None
    codec: str | None
    content_type: str
    size_bytes: int


def sample_indices(available: int, wanted: int) -> np.ndarray:
    """``wanted`` frame indices spread uniformly over ``available`` frames."""
    if available <= 0:
        raise InvalidInput("the video has no decodable frames")
    return np.linspace(0, available - 1, wanted).round().astype(np.int64)


def _resize(clip: np.ndarray, size: InputSize) -> np.ndarray:
    """Uniform temporal sampling and bilinear spatial resize of a uint8 clip."""
    clip = clip[sample_indices(len(clip), size.frames)]
    if clip.shape[1:3] == (size.height, size.width):
        return np.ascontiguousarray(clip)
    frames = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).float()
    resized = F.interpolate(frames, size=(size.height, size.width), mode="bilinear",
                            align_corners=False, antialias=True)
    return resized.round_().clamp_(0, 255).byte().permute(0, 2, 3, 1).contiguous().numpy()


def decode_npy(data: bytes, size: InputSize) -> np.ndarray:
    """A raw clip: uint8 (T, H, W, 3), no pickles, no NaN."""
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInput(f"not a readable .npy array: {exc}") from None
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise InvalidInput("the clip contains NaN values")
    if array.dtype != np.uint8:
        raise InvalidInput(f"a raw clip must be uint8, got {array.dtype}")
    if array.ndim != 4 or array.shape[-1] != 3 or min(array.shape[:3]) < 1:
        raise InvalidInput(f"a raw clip must have shape (T, H, W, 3), got {array.shape}")
    if min(array.shape[1:3]) < 3:
        raise InvalidInput(f"frames of {array.shape[1]}x{array.shape[2]} are too small")
    return _resize(array, size)


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


def decode_upload(
    data: bytes, filename: str | None, content_type: str | None, size: InputSize,
    max_frames: int = 2000,
) -> DecodedClip:
    """Decode one upload into the model's input size; raises domain errors for bad input."""
    content_type = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    if not data:
        raise InvalidInput("the upload is empty")
    is_npy = data.startswith(NPY_MAGIC) or (filename or "").lower().endswith(".npy")
    if is_npy:
        if content_type not in NPY_TYPES:
            raise UnsupportedMediaType(f"a .npy clip must be sent as application/x-npy or "
                                       f"application/octet-stream, not {content_type}")
        return DecodedClip(decode_npy(data, size), None, None, content_type, len(data))
    if not (content_type.startswith("video/") or content_type in VIDEO_TYPES_EXTRA):
        raise UnsupportedMediaType(
            f"unsupported content type {content_type}; send a video file (video/*, image/gif) "
            "or a raw uint8 clip as .npy")
    clip, meta, codec = decode_video(data, size, max_frames)
    return DecodedClip(clip, meta, codec, content_type, len(data))
