"""The R(2+1)D network: shapes, presets and the input contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.model import ModelConfig, R2Plus1D, clips_to_tensor


def test_tiny_model_returns_logits_and_embedding() -> None:
    config = ModelConfig(num_classes=10, frames=16, height=32, width=32)
    model = R2Plus1D(config).eval()
    with torch.no_grad():
        logits, embedding = model(torch.rand(3, 3, 16, 32, 32))
    assert logits.shape == (3, 10)
    assert embedding.shape == (3, config.embedding_dim)
    assert torch.isfinite(logits).all() and torch.isfinite(embedding).all()


def test_r2plus1d_18_preset_has_the_reference_layout() -> None:
    config = ModelConfig.r2plus1d_18(num_classes=400, frames=8, height=32, width=32)
    model = R2Plus1D(config).eval()
    # torchvision's r2plus1d_18 has 31.5 M parameters with 400 classes.
    assert 31.0e6 < sum(p.numel() for p in model.parameters()) < 32.0e6
    assert config.embedding_dim == 512
    with torch.no_grad():
        logits, embedding = model(torch.rand(1, 3, 8, 32, 32))
    assert logits.shape == (1, 400) and embedding.shape == (1, 512)


def test_config_round_trips_through_a_dict() -> None:
    config = ModelConfig(num_classes=4, widths=(8, 16), blocks=(2, 1), label_names=("a", "b", "c", "d"))
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_mismatched_widths_and_blocks_are_rejected() -> None:
    with pytest.raises(ValueError, match="one entry per stage"):
        R2Plus1D(ModelConfig(num_classes=2, widths=(8, 16), blocks=(1,)))


def test_clips_to_tensor_scales_and_reorders() -> None:
    clips = np.zeros((2, 4, 6, 8, 3), dtype=np.uint8)
    clips[..., 0] = 255
    tensor = clips_to_tensor(clips)
    assert tensor.shape == (2, 3, 4, 6, 8)
    assert tensor[:, 0].min() == 1.0 and tensor[:, 1:].max() == 0.0
    with pytest.raises(ValueError, match="uint8 clips"):
        clips_to_tensor(clips.astype(np.float32))
