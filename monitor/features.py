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


def quality_features(clip: np.ndarray, meta: VideoMeta | None = None) -> dict[str, float]:
    """Quality features of one uint8 clip (T, H, W, 3)."""
    if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
        raise ValueError(f"expected a uint8 clip (T, H, W, 3), got {clip.shape} {clip.dtype}")
    if min(clip.shape[1:3]) < 3:
        raise ValueError(f"frames of {clip.shape[1]}x{clip.shape[2]} are too small to measure")
    pixels = torch.from_numpy(np.ascontiguousarray(clip))
    luma = pixels.float() @ _LUMA
    high = pixels.amax(dim=-1).float()
    low = pixels.amin(dim=-1).float()
    saturation = torch.where(high > 0, (high - low) / high.clamp_min(1.0), 0.0)
    laplacian, noise = F.conv2d(luma.unsqueeze(1), _FILTERS).unbind(dim=1)
    motion = (luma[1:] - luma[:-1]).abs().mean().item() if len(luma) > 1 else 0.0
    features = {
        "brightness": luma.mean().item(),
        "contrast": luma.std(dim=(1, 2), correction=0).mean().item(),
        "sharpness": laplacian.var(dim=(1, 2), correction=0).mean().item(),
        "saturation": saturation.mean().item(),
        "motion_energy": motion,
        "noise": _NOISE_SCALE * noise.abs().mean().item(),
    }
    if meta is None:
        features.update({name: math.nan for name in FILE_FEATURES})
    else:
        features.update(
            frame_count=float(meta.frame_count), fps=float(meta.fps), width=float(meta.width),
            height=float(meta.height), duration=float(meta.duration),
        )
    return features
