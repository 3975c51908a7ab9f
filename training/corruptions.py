"""A bank of video corruptions at graded severities (numpy and PyAV only).

Each family changes what a camera records in one way; its levels run from mild to severe.
Training and registration re-render the reference clips under every family and level to
fit the accuracy estimators (:mod:`training.estimation`); the simulator's scenarios call
the same functions, so a scenario and its family are one implementation. Every function
takes and returns uint8 frames (T, H, W, 3) and never changes their shape.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Round and clip float frames back to uint8."""
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def shift_brightness(frames: np.ndarray, shift: float) -> np.ndarray:
    """Every pixel ``shift`` grey levels brighter (negative: darker)."""
    return to_uint8(frames.astype(np.float32) + shift)


def scale_contrast(frames: np.ndarray, factor: float) -> np.ndarray:
    """Pixels pulled towards (factor < 1) or pushed from each frame's mean grey."""
    x = frames.astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return to_uint8(mean + (x - mean) * factor)


def add_noise(frames: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian sensor noise of ``sigma`` grey levels."""
    return to_uint8(frames.astype(np.float32) + rng.normal(0.0, sigma, frames.shape))


def box_blur(frames: np.ndarray, radius: int) -> np.ndarray:
    """An out-of-focus lens: a (2r+1)^2 box blur of every frame, edges repeated."""
    if radius <= 0:
        return frames
    h, w = frames.shape[1:3]
    padded = np.pad(frames.astype(np.float32), ((0, 0), (radius, radius), (radius, radius),
                                                (0, 0)), mode="edge")
    side = 2 * radius + 1
    total = sum(padded[:, dy:dy + h, dx:dx + w] for dy in range(side) for dx in range(side))
    return to_uint8(total / side ** 2)


def shake(frames: np.ndarray, pixels: int, rng: np.random.Generator) -> np.ndarray:
    """The whole image jitters by up to ``pixels`` in each direction, every frame."""
    if pixels <= 0:
        return frames
    shifts = rng.integers(-pixels, pixels + 1, size=(len(frames), 2))
    return np.stack([np.roll(f, tuple(s), axis=(0, 1)) for f, s in zip(frames, shifts)])


def occlude(frames: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A dark square covering ``fraction`` of the view, at one random place for the clip."""
    h, w = frames.shape[1:3]
    side = np.sqrt(fraction)
    bh, bw = int(round(h * side)), int(round(w * side))
    if bh == 0 or bw == 0:
        return frames
    y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
    out = frames.copy()
    out[:, y:y + bh, x:x + bw] = 16
    return out


def hold_frames(frames: np.ndarray, step: int) -> np.ndarray:
    """A camera at 1/``step`` of the rate, sampled back up: every ``step``-th frame held for
    ``step`` frames (the clip keeps its length; motion comes in steps)."""
    if step <= 1:
        return frames
    return np.repeat(frames[::step], step, axis=0)[:len(frames)]


def reencode(frames: np.ndarray, crf: int) -> np.ndarray:
    """A low-bitrate H.264 round trip at constant rate factor ``crf`` (higher: worse)."""
    t, h, w = frames.shape[:3]
    padded = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = padded.shape[2], padded.shape[1], "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in padded:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer, mode="r") as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    out = np.stack(decoded[:t])[:, :h, :w]
    if len(out) < t:  # an encoder that dropped a trailing frame: hold the last one
        out = np.concatenate([out, np.repeat(out[-1:], t - len(out), axis=0)])
    return np.ascontiguousarray(out)


Apply = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Corruption:
    """One family: how it is applied and its levels, mildest first."""

    family: str
    levels: tuple[float, ...]
    apply: Apply

    def __call__(self, frames: np.ndarray, level: float, rng: np.random.Generator
                 ) -> np.ndarray:
        return self.apply(frames, level, rng)


# Family names match the simulator's scenarios where one exists, so a benchmark can hold
# a family out of fitting and test on its scenario.
CORRUPTIONS: dict[str, Corruption] = {c.family: c for c in (
    Corruption("blur", (1, 2, 3), lambda f, v, r: box_blur(f, int(v))),
    Corruption("sensor_noise", (8.0, 16.0, 28.0), lambda f, v, r: add_noise(f, v, r)),
    Corruption("lighting", (-60.0, 35.0, 70.0), lambda f, v, r: shift_brightness(f, v)),
    Corruption("contrast", (0.6, 0.4, 0.25), lambda f, v, r: scale_contrast(f, v)),
    Corruption("compression", (36, 42, 48), lambda f, v, r: reencode(f, int(v))),
    Corruption("frame_rate_drop", (2, 3, 4), lambda f, v, r: hold_frames(f, int(v))),
    Corruption("camera_shake", (1, 2, 3), lambda f, v, r: shake(f, int(v), r)),
    Corruption("occlusion", (0.1, 0.2, 0.35), lambda f, v, r: occlude(f, v, r)),
)}


def corrupt_clips(clips: np.ndarray, corruption: Corruption, level: float, seed: int
                  ) -> np.ndarray:
    """Every clip (N, T, H, W, 3) under one family at one level, reproducibly."""
    rng = np.random.default_rng(seed)
    return np.stack([corruption(clip, level, rng) for clip in clips])
