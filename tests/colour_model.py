"""A model that is not vidmon's own, served through the same model-source contract: it
names the colour a clip is mostly (red, green or blue) from the channels' means. Its answer
is known for any scene, so timelines and stream events can be checked against the truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from monitor.card import ModelCard
from monitor.errors import NoModel
from monitor.runtime import ModelRuntime
from tests.media import COLOURS
from training.video_io import write_video

COLOUR_CARD = ModelCard(labels=("red", "green", "blue"), frames=8, height=32, width=32,
                        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), sampling_fps=8.0,
                        stride=1)


class ColourNet(torch.nn.Module):
    """Logits: each channel's mean over the clip; embedding: the means and their squares."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        means = x.mean(dim=(2, 3, 4))
        return means * 8, torch.cat([means, means ** 2], dim=1)


class ColourSource:
    """A model source holding one version of :class:`ColourNet`."""

    def load(self, model_uri: str, device: str, version: str | None = None) -> ModelRuntime:
        return ModelRuntime(ColourNet().eval(), COLOUR_CARD, "colour-model", "1",
                            torch.device(device))

    def version_of(self, model_uri: str) -> str:
        return "1"

    def profile(self, model_name: str, model_version: str):  # type: ignore[no-untyped-def]
        raise NoModel("the colour model has no reference profile")


def scene_frames(scenes: list[tuple[str, float]], fps: float, size: int = 64,
                 seed: int = 0) -> np.ndarray:
    """Frames of scenes (colour, seconds) one after the other, each a noisy flat colour."""
    rng = np.random.default_rng(seed)
    frames = []
    for colour, seconds in scenes:
        for _ in range(round(seconds * fps)):
            frame = np.array(COLOURS[colour], dtype=np.float32) + rng.normal(
                0, 12, size=(size, size, 3))
            frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return np.stack(frames)


def write_scenes(path: Path, scenes: list[tuple[str, float]], fps: float = 16.0,
                 size: int = 64) -> Path:
    """An H.264 file of ``scenes``; the true label changes at their boundaries."""
    return write_video(scene_frames(scenes, fps, size), path, fps=fps)
