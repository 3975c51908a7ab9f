"""Turn an upload (a video file or a raw ``.npy`` clip) into the clips the model takes.

Videos go through :mod:`monitor.video` (the path reference profiles and training data take
too). Raw clips are read by a header parser of our own, not ``np.load``: the header is
checked against the data length and the pixel limits before anything is allocated (the
array is a view of the uploaded bytes), and numpy's ``ast``-based header parsing, which is
not thread-safe in CPython 3.11, never runs. Only the frames the card's clip plan needs are
resized, one at a time, before they are stacked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from monitor.card import ModelCard
from monitor.errors import InvalidInput, UnsupportedMediaType
from monitor.preprocess import resize_frames
from monitor.video import DecodedVideo, DecodeLimits, cut_clips, decode_video

NPY_MAGIC = b"\x93NUMPY"
NPY_TYPES = {"application/x-npy", "application/npy", "application/octet-stream"}
VIDEO_TYPES_EXTRA = {"image/gif", "application/mp4", "application/x-matroska",
                     "application/octet-stream"}
MAX_NPY_HEADER = 4096
_NPY_HEADER = re.compile(
    r"\{\s*'descr':\s*'(?P<descr>[^']{1,16})',\s*'fortran_order':\s*(?P<fortran>True|False),"
    r"\s*'shape':\s*\((?P<shape>[0-9,\s]{0,80})\),?\s*\}\s*")
UINT8 = {"|u1", "<u1", ">u1", "u1", "|B", "B"}


@dataclass(frozen=True)
class DecodedUpload:
    """The clips of an upload, ready for the model, with what the upload said about itself."""

    video: DecodedVideo
    content_type: str
    size_bytes: int


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` file says it holds, and where its data starts."""

    descr: str
    fortran_order: bool
    shape: tuple[int, ...]
    offset: int


def read_npy_header(data: bytes) -> NpyHeader:
    """Parse a ``.npy`` header (format versions 1-3) without evaluating it."""
    if len(data) < 10 or not data.startswith(NPY_MAGIC):
        raise InvalidInput("not a .npy file (no NUMPY magic)")
    major = data[6]
    if major == 1:
        length, start = int.from_bytes(data[8:10], "little"), 10
    elif major in (2, 3):
        length, start = int.from_bytes(data[8:12], "little"), 12
    else:
        raise InvalidInput(f"unsupported .npy format version {major}")
    if length > MAX_NPY_HEADER or start + length > len(data):
        raise InvalidInput("the .npy header is truncated or longer than "
                           f"{MAX_NPY_HEADER} bytes")
    text = data[start:start + length].decode("utf-8" if major == 3 else "latin-1",
                                             errors="replace")
    match = _NPY_HEADER.fullmatch(text.rstrip("\n "))
    if match is None:
        raise InvalidInput("the .npy header is not a plain array description")
    try:
        shape = tuple(int(x) for x in match["shape"].replace(" ", "").split(",") if x)
    except ValueError:
        raise InvalidInput("the .npy header's shape is not a tuple of integers") from None
    return NpyHeader(match["descr"], match["fortran"] == "True", shape, start + length)


def decode_npy(data: bytes, card: ModelCard, limits: DecodeLimits) -> DecodedVideo:
    """A raw clip: uint8 (T, H, W, 3), within the limits, its length what its header says."""
    header = read_npy_header(data)
    if header.descr not in UINT8:
        raise InvalidInput(f"a raw clip must be uint8, got dtype '{header.descr}'")
    shape = header.shape
    if len(shape) != 4 or shape[-1] != 3 or min(shape[:3]) < 1:
        raise InvalidInput(f"a raw clip must have shape (T, H, W, 3), got {shape}")
    frames, height, width, _ = shape
    if min(height, width) < 3:
        raise InvalidInput(f"frames of {width}x{height} are too small")
    limits.check_frames(frames, height, width)
    expected, held = frames * height * width * 3, len(data) - header.offset
    if held != expected:
        raise InvalidInput(f"the .npy header says {expected} bytes of pixels for shape "
                           f"{shape}, the file holds {held}")
    array = np.frombuffer(data, dtype=np.uint8, count=expected, offset=header.offset)
    array = array.reshape(shape, order="F" if header.fortran_order else "C")
    # One frame copied at a time (the view of the upload is read-only), resized alone.
    clips, segments = cut_clips(frames, 0.0, card, limits.max_clips,
                                lambda i: resize_frames(array[i:i + 1].copy(), card)[0])
    return DecodedVideo(clips, segments, None, None)


def decode_upload(data: bytes, filename: str | None, content_type: str | None,
                  card: ModelCard, limits: DecodeLimits) -> DecodedUpload:
    """Decode one upload into the card's clips; raises domain errors for bad input."""
    content_type = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    if not data:
        raise InvalidInput("the upload is empty")
    is_npy = data.startswith(NPY_MAGIC) or (filename or "").lower().endswith(".npy")
    if is_npy:
        if content_type not in NPY_TYPES:
            raise UnsupportedMediaType(f"a .npy clip must be sent as application/x-npy or "
                                       f"application/octet-stream, not {content_type[:100]}")
        return DecodedUpload(decode_npy(data, card, limits), content_type, len(data))
    if not (content_type.startswith("video/") or content_type in VIDEO_TYPES_EXTRA):
        raise UnsupportedMediaType(
            f"unsupported content type {content_type[:100]}; send a video file (video/*, "
            "image/gif) or a raw uint8 clip as .npy")
    return DecodedUpload(decode_video(data, card, limits), content_type, len(data))
