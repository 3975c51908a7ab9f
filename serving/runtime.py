"""The model runtime: a loaded network on one device and the clip-to-probabilities step.

Imports torch and ``training.model`` only (no MLflow), so it runs on a bare GPU machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from monitor.features import pixel_features
from serving.decode import InputSize
from training.model import ModelConfig, autocast_for, clips_to_tensor, prepare_for_device


class LoadedModelLike(Protocol):
    """What a model loader returns (``training.registry.LoadedModel``)."""

    model: torch.nn.Module
    config: ModelConfig
    name: str | None
    version: str | None


@dataclass
class ModelRuntime:
    """One model version on one device."""

    model: torch.nn.Module
    label_names: tuple[str, ...]
    input_size: InputSize
    name: str
    version: str
    device: torch.device

    @classmethod
    def from_loaded(cls, loaded: LoadedModelLike, device: torch.device) -> "ModelRuntime":
        """Wrap a loaded model, moved to ``device`` in eval mode."""
        config = loaded.config
        model = prepare_for_device(loaded.model, device).eval()  # type: ignore[arg-type]
        return cls(model, tuple(config.label_names),
                   InputSize(config.frames, config.height, config.width),
                   loaded.name or "unregistered", loaded.version or "0", device)

    @torch.inference_mode()
    def predict(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For uint8 clips (N, T, H, W, 3): softmax probabilities (N, C), embeddings (N, D)
        and pixel quality features (N, 6), all from one upload of the batch to the device."""
        pixels = torch.from_numpy(clips).to(self.device, non_blocking=True)
        batch = clips_to_tensor(pixels)
        if self.device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last_3d)
        with autocast_for(self.device):
            logits, embeddings = self.model(batch)
        probabilities = torch.softmax(logits.float(), dim=1)
        features = pixel_features(pixels)
        return (probabilities.cpu().numpy(), embeddings.float().cpu().numpy(),
                features.cpu().numpy())


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
