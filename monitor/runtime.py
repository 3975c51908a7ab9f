"""The model runtime: one model version on one device, ready for uint8 clips.

Whatever the model's format, it reaches here as a network whose ``forward`` maps the card's
normalised float input (N, 3, T, H, W) to ``(logits, embedding)`` (the model source builds
that adapter from the card). The runtime normalises, runs the network (bf16 autocast on
CUDA), and measures the pixel quality features in the same step on the same device.
Imports torch and the core only (no MLflow), so it runs on a bare GPU machine.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ContextManager

import numpy as np
import torch

from monitor.card import ModelCard
from monitor.features import pixel_features
from monitor.preprocess import to_model_input


def best_device() -> torch.device:
    """CUDA when present, CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; otherwise the named device."""
    return best_device() if name == "auto" else torch.device(name)


def autocast_for(device: torch.device) -> ContextManager[Any]:
    """bf16 autocast on CUDA; none on CPU, where fp32 is faster for these convolutions."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@dataclass
class ModelRuntime:
    """One model version on one device."""

    network: torch.nn.Module
    card: ModelCard
    name: str
    version: str
    device: torch.device

    @property
    def label_names(self) -> tuple[str, ...]:
        """Class names in output order."""
        return self.card.labels

    @torch.inference_mode()
    def predict(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For uint8 clips (N, T, H, W, 3): softmax probabilities (N, C), embeddings (N, D)
        and pixel quality features (N, 6), from one upload of the batch to the device."""
        pixels = torch.from_numpy(clips).to(self.device, non_blocking=True)
        with autocast_for(self.device):
            logits, embeddings = self.network(to_model_input(pixels, self.card))
        probabilities = torch.softmax(logits.float(), dim=1)
        features = pixel_features(pixels)
        return (probabilities.cpu().numpy(), embeddings.float().cpu().numpy(),
                features.cpu().numpy())

    def warm_up(self) -> None:
        """One forward pass on a blank clip, so the first request does not pay for it."""
        self.predict(np.zeros((1, *self.card.clip_shape), dtype=np.uint8))
