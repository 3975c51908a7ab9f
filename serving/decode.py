"""Turn an upload (a video file or a raw ``.npy`` clip) into the clip the model takes.

Videos go through :mod:`monitor.video` (the path reference profiles take too); raw clips
are checked, sampled in time and resized here.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from monitor.errors import InvalidInput, UnsupportedMediaType
from monitor.features import VideoMeta
from monitor.video import InputSize, decode_video, sample_indices

NPY_MAGIC = b"\x93NUMPY"
NPY_TYPES = {"application/x-npy", "application/npy", "application/octet-stream"}
VIDEO_TYPES_EXTRA = {"image/gif", "application/mp4", "application/x-matroska",
                     "application/octet-stream"}


@dataclass(frozen=True)
class DecodedClip:
    """A clip ready for the model, with what the upload said about itself."""

    clip: np.ndarray
    meta: VideoMeta | None
    codec: str | None
    content_type: str
    size_bytes: int


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


__all__ = ["DecodedClip", "InputSize", "decode_npy", "decode_upload", "decode_video",
           "sample_indices"]
