"""Preprocessing driven by a model card: one implementation for serving, profiling and training.

A video becomes the model's input in three steps:

1. **spatial**: each frame is resized (``stretch`` to height x width, or the short side to
   ``short_side`` keeping the aspect ratio) and centre-cropped to height x width;
2. **temporal**: :func:`plan_clips` picks the frames of each clip: ``uniform`` spreads the
   card's frame count over the whole video (one clip); ``stride`` resamples the video to the
   card's ``fps`` and takes ``frames`` frames ``stride`` apart, as many evenly spaced clips as
   fit (at most ``max_clips``);
3. **pixels**: :func:`to_model_input` turns uint8 clips (N, T, H, W, 3) into float
   (N, 3, T, H, W), divided by 255 and normalised by the card's mean and std.

Steps 1-2 produce the uint8 clip that quality features are measured on and the clip store
keeps; step 3 happens next to the model. Torch and numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from monitor.card import ModelCard


@dataclass(frozen=True)
class Segment:
    """One clip of a video: the source frame indices and the time they span."""

    indices: np.ndarray
    start_s: float
    end_s: float


def resized_size(card: ModelCard, height: int, width: int) -> tuple[int, int]:
    """(height, width) a source frame is scaled to before the centre crop."""
    if card.short_side is None or height <= 0 or width <= 0:
        return card.height, card.width
    scale = card.short_side / min(height, width)
    return (max(card.height, round(height * scale)), max(card.width, round(width * scale)))


def centre_crop(frames: np.ndarray, card: ModelCard) -> np.ndarray:
    """The card's height x width from the middle of frames (..., h, w, 3)."""
    h, w = frames.shape[-3:-1]
    top, left = (h - card.height) // 2, (w - card.width) // 2
    return frames[..., top:top + card.height, left:left + card.width, :]


def resize_frames(frames: np.ndarray, card: ModelCard) -> np.ndarray:
    """Resize and crop uint8 frames (T, h, w, 3) as the card says (for raw clips; video
    files are scaled by FFmpeg as they decode, to the same :func:`resized_size`)."""
    size = resized_size(card, *frames.shape[1:3])
    if frames.shape[1:3] != size:
        tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
        tensor = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False,
                               antialias=True)
        frames = tensor.round_().clamp_(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return np.ascontiguousarray(centre_crop(frames, card))


def plan_clips(available: int, fps: float, card: ModelCard, max_clips: int = 1
               ) -> list[Segment]:
    """The clips to take from a video of ``available`` frames at ``fps`` (0: unknown, taken
    as the card's rate)."""
    if available <= 0:
        raise ValueError("the video has no frames")
    rate = fps if fps and fps > 0 else (card.sampling_fps or 1.0)
    if card.sampling_fps is None:
        indices = np.linspace(0, available - 1, card.frames).round().astype(np.int64)
        return [Segment(indices, 0.0, available / rate)]
    step = card.stride * rate / card.sampling_fps  # source frames between model frames
    offsets = np.arange(card.frames) * step
    span = offsets[-1] + 1
    count = 1 if available <= span else min(max_clips, math.ceil(available / span))
    if count == 1:
        starts = [max(0.0, (available - span) / 2)]
    else:
        starts = np.linspace(0.0, available - span, count)
    segments = []
    for start in starts:
        indices = np.clip((start + offsets).round(), 0, available - 1).astype(np.int64)
        segments.append(Segment(indices, float(indices[0] / rate),
                                float((indices[-1] + 1) / rate)))
    return segments


def to_model_input(clips: torch.Tensor, card: ModelCard) -> torch.Tensor:
    """uint8 clips (N, T, H, W, 3) on any device -> normalised float (N, 3, T, H, W)."""
    if clips.dtype != torch.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"expected uint8 clips (N, T, H, W, 3), got {tuple(clips.shape)} "
                         f"{clips.dtype}")
    mean = torch.tensor(card.mean, device=clips.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(card.std, device=clips.device).view(1, 3, 1, 1, 1)
    x = clips.permute(0, 4, 1, 2, 3).float().div_(255.0)
    return x.sub_(mean).div_(std)
