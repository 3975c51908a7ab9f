"""The R(2+1)D network: shapes, presets and the input contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monitor.card import ModelCard
from monitor.preprocess import to_model_input
from training.model import ModelConfig, R2Plus1D


def test_tiny_model_returns_logits_and_embedding() -> None:
    config = ModelConfig(num_classes=10)
    model = R2Plus1D(config).eval()
    with torch.no_grad():
        logits, embedding = model(torch.rand(3, 3, 16, 32, 32))
    assert logits.shape == (3, 10)
    assert embedding.shape == (3, config.embedding_dim)
    assert torch.isfinite(logits).all() and torch.isfinite(embedding).all()


def test_r2plus1d_18_preset_has_the_reference_layout() -> None:
    config = ModelConfig.r2plus1d_18(num_classes=400)
    model = R2Plus1D(config).eval()
    # torchvision's r2plus1d_18 has 31.5 M parameters with 400 classes.
    assert 31.0e6 < sum(p.numel() for p in model.parameters()) < 32.0e6
    assert config.embedding_dim == 512
    with torch.no_grad():
        logits, embedding = model(torch.rand(1, 3, 8, 32, 32))
    assert logits.shape == (1, 400) and embedding.shape == (1, 512)


def test_config_round_trips_through_a_dict() -> None:
    config = ModelConfig(num_classes=4, widths=(8, 16), blocks=(2, 1))
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_mismatched_widths_and_blocks_are_rejected() -> None:
    with pytest.raises(ValueError, match="one entry per stage"):
        R2Plus1D(ModelConfig(num_classes=2, widths=(8, 16), blocks=(1,)))


def test_model_input_scales_reorders_and_normalises_by_the_card() -> None:
    card = ModelCard(labels=("a", "b"), frames=4, height=6, width=8, mean=(0.5, 0.0, 0.0),
                     std=(0.5, 1.0, 2.0))
    clips = np.zeros((2, 4, 6, 8, 3), dtype=np.uint8)
    clips[..., 0] = 255
    clips[..., 2] = 255
    tensor = to_model_input(torch.from_numpy(clips), card)
    assert tensor.shape == (2, 3, 4, 6, 8)
    assert torch.all(tensor[:, 0] == 1.0)  # (1 - 0.5) / 0.5
    assert torch.all(tensor[:, 1] == 0.0) and torch.all(tensor[:, 2] == 0.5)
    with pytest.raises(ValueError, match="uint8 clips"):
        to_model_input(torch.from_numpy(clips.astype(np.float32)), card)
