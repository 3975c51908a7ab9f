"""Turn an upload (a video file or a raw ``.npy`` clip) into the clips the model takes.

Videos go through :mod:`monitor.video` (the path reference profiles and training data take
too); raw clips are checked here, then resized, cropped and cut into clips by the same
card-driven preprocessing (:mod:`monitor.preprocess`), their frames taken at the card's rate.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from monitor.card import ModelCard
from monitor.errors import InvalidInput, UnsupportedMediaType
from monitor.preprocess import resize_frames
from monitor.video import DecodedVideo, clips_from_frames, decode_video

NPY_MAGIC = b"\x93NUMPY"
NPY_TYPES = {"application/x-npy", "application/npy", "application/octet-stream"}
VIDEO_TYPES_EXTRA = {"image/gif", "application/mp4", "application/x-matroska",
                     "application/octet-stream"}


@dataclass(frozen=True)
class DecodedUpload:
    """The clips of an upload, ready for the model, with what the upload said about itself."""

    video: DecodedVideo
    content_type: str
    size_bytes: int


def decode_npy(data: bytes, card: ModelCard, max_frames: int, max_clips: int) -> DecodedVideo:
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
    if len(array) > max_frames:
        raise InvalidInput(f"the clip has more than {max_frames} frames")
    clips, segments = clips_from_frames(resize_frames(array, card), 0.0, card, max_clips)
    return DecodedVideo(np.ascontiguousarray(clips), segments, None, None)


def decode_upload(
    data: bytes, filename: str | None, content_type: str | None, card: ModelCard,
    max_frames: int = 2000, max_clips: int = 1,
) -> DecodedUpload:
    """Decode one upload into the card's clips; raises domain errors for bad input."""
    content_type = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    if not data:
        raise InvalidInput("the upload is empty")
    is_npy = data.startswith(NPY_MAGIC) or (filename or "").lower().endswith(".npy")
    if is_npy:
        if content_type not in NPY_TYPES:
            raise UnsupportedMediaType(f"a .npy clip must be sent as application/x-npy or "
                                       f"application/octet-stream, not {content_type}")
        return DecodedUpload(decode_npy(data, card, max_frames, max_clips), content_type,
                             len(data))
    if not (content_type.startswith("video/") or content_type in VIDEO_TYPES_EXTRA):
        raise UnsupportedMediaType(
            f"unsupported content type {content_type}; send a video file (video/*, image/gif) "
            "or a raw uint8 clip as .npy")
    return DecodedUpload(decode_video(data, card, max_frames, max_clips), content_type,
                         len(data))
