"""Video quality features, computed the same way for the reference profile and the service.

Pixel features are measured on the clip the model sees (after temporal sampling and resize
to the model's input size): that is what drift in them can do to predictions, the cost per
clip is fixed whatever the upload's resolution, and reference and production clips are
measured on the same footing. The file's own size, rate and length come in ``VideoMeta``.
Pixel statistics are in 0-255 luma units (saturation in 0-1). File metadata (frame count,
fps, size, duration) is carried through when the clip came from a file and is NaN
otherwise, so every row has the same columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

PIXEL_FEATURES: tuple[str, ...] = (
    "brightness",
    "contrast",
    "sharpness",
    "saturation",
    "motion_energy",
    "noise",
)
FILE_FEATURES: tuple[str, ...] = ("frame_count", "fps", "width", "height", "duration")
FEATURE_NAMES: tuple[str, ...] = PIXEL_FEATURES + FILE_FEATURES

_LUMA = torch.tensor([0.299, 0.587, 0.114])
# Two 3x3 filters applied in one convolution: the 4-neighbour Laplacian (sharpness) and
# Immerkaer's (1996) difference of Laplacians, which cancels smooth structure and keeps white
# noise: sigma = sqrt(pi/2) / (6 (W-2)(H-2)) * sum |I * N|.
_FILTERS = torch.tensor(
    [[[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]],
     [[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]]]
).unsqueeze(1)
_NOISE_SCALE = math.sqrt(math.pi / 2.0) / 6.0


@dataclass(frozen=True)
class VideoMeta:
    """What the container says about a decoded video file."""

    frame_count: int
    fps: float
    width: int
    height: int

    @property
    def duration(self) -> float:
        """Seconds of video, from frame count and rate."""
        return self.frame_count / self.fps if self.fps > 0 else math.nan


def pixel_features(clips: torch.Tensor) -> torch.Tensor:
    """Pixel features of uint8 clips (N, T, H, W, 3) on any device: float32 (N, 6), columns in
    :data:`PIXEL_FEATURES` order. Vectorised over the batch, so the service computes them in
    the same step (and on the same device) as the model."""
    n, t, h, w, _ = clips.shape
    luma = clips.float() @ _LUMA.to(clips.device)
    high = clips.amax(dim=-1).float()
    low = clips.amin(dim=-1).float()
    saturation = torch.where(high > 0, (high - low) / high.clamp_min(1.0), 0.0)
    filtered = F.conv2d(luma.reshape(n * t, 1, h, w), _FILTERS.to(clips.device))
    laplacian, noise = filtered.reshape(n, t, 2, h - 2, w - 2).unbind(dim=2)
    if t > 1:
        motion = (luma[:, 1:] - luma[:, :-1]).abs().mean(dim=(1, 2, 3))
    else:
        motion = torch.zeros(n, device=clips.device)
    return torch.stack([
        luma.mean(dim=(1, 2, 3)),
        luma.std(dim=(2, 3), correction=0).mean(dim=1),
        laplacian.var(dim=(2, 3), correction=0).mean(dim=1),
        saturation.mean(dim=(1, 2, 3)),
        motion,
        _NOISE_SCALE * noise.abs().mean(dim=(1, 2, 3)),
    ], dim=1)


def feature_dict(pixel_row: np.ndarray, meta: VideoMeta | None = None) -> dict[str, float]:
    """One clip's features by name: a row of :func:`pixel_features` plus file metadata."""
    features = {name: float(v) for name, v in zip(PIXEL_FEATURES, pixel_row)}
    if meta is None:
        features.update({name: math.nan for name in FILE_FEATURES})
    else:
        features.update(
            frame_count=float(meta.frame_count), fps=float(meta.fps), width=float(meta.width),
            height=float(meta.height), duration=float(meta.duration),
        )
    return features


def _check_clips(clips: np.ndarray) -> None:
    if clips.ndim != 5 or clips.shape[-1] != 3 or clips.dtype != np.uint8:
        raise ValueError(f"expected uint8 clips (T, H, W, 3), got {clips.shape[1:]} {clips.dtype}")
    if min(clips.shape[2:4]) < 3:
        raise ValueError(f"frames of {clips.shape[2]}x{clips.shape[3]} are too small to measure")


def pixel_feature_matrix(clips: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Pixel features (N, 6) of many uint8 clips (N, T, H, W, 3), computed in batches."""
    _check_clips(clips)
    rows = [pixel_features(torch.from_numpy(np.ascontiguousarray(clips[i : i + batch_size])))
            for i in range(0, len(clips), batch_size)]
    return torch.cat(rows).numpy()


def quality_features_batch(
    clips: np.ndarray, meta: VideoMeta | None = None, batch_size: int = 256
) -> list[dict[str, float]]:
    """Quality features of many uint8 clips (N, T, H, W, 3) that share ``meta``."""
    return [feature_dict(row, meta) for row in pixel_feature_matrix(clips, batch_size)]


def quality_features(clip: np.ndarray, meta: VideoMeta | None = None) -> dict[str, float]:
    """Quality features of one uint8 clip (T, H, W, 3)."""
    return quality_features_batch(clip[None], meta)[0]
