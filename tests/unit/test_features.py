"""Quality features on hand-made clips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monitor.features import FEATURE_NAMES, FILE_FEATURES, VideoMeta, quality_features


def _textured_clip(frames: int = 8, size: int = 32, seed: int = 0) -> np.ndarray:
    """A clip of random blocks, 4x4 pixels each, that slides one pixel a frame."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (size // 4 + frames, size // 4, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(blocks, 4, axis=0), 4, axis=1)
    return np.stack([image[t : t + size] for t in range(frames)])


def _box_blur(clip: np.ndarray) -> np.ndarray:
    padded = np.pad(clip.astype(np.float32), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = clip.shape[1:3]
    total = sum(padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))
    return np.round(total / 9.0).astype(np.uint8)


def test_a_brighter_clip_has_higher_brightness() -> None:
    clip = _textured_clip()
    brighter = np.clip(clip.astype(np.int16) + 40, 0, 255).astype(np.uint8)
    assert quality_features(brighter)["brightness"] > quality_features(clip)["brightness"] + 20


def test_a_static_clip_has_zero_motion_energy() -> None:
    still = np.repeat(_textured_clip()[:1], 8, axis=0)
    assert quality_features(still)["motion_energy"] == 0.0
    assert quality_features(_textured_clip())["motion_energy"] > 10.0


def test_a_blurred_clip_has_lower_sharpness() -> None:
    clip = _textured_clip()
    assert quality_features(_box_blur(clip))["sharpness"] < 0.5 * quality_features(clip)["sharpness"]


def test_noise_estimate_tracks_added_noise() -> None:
    flat = np.full((8, 64, 64, 3), 128, dtype=np.uint8)
    rng = np.random.default_rng(0)
    noisy = np.clip(flat + rng.normal(0, 10, flat.shape), 0, 255).astype(np.uint8)
    assert quality_features(flat)["noise"] == pytest.approx(0.0, abs=1e-6)
    # Immerkaer's estimate of the luma noise; luma averages the three channels' noise.
    expected = 10 * math.sqrt(0.299**2 + 0.587**2 + 0.114**2)
    assert quality_features(noisy)["noise"] == pytest.approx(expected, rel=0.15)


def test_contrast_and_saturation() -> None:
    grey = np.full((4, 16, 16, 3), 90, dtype=np.uint8)
    red = np.zeros_like(grey)
    red[..., 0] = 200
    features = quality_features(grey)
    assert features["contrast"] == 0.0 and features["saturation"] == 0.0
    assert quality_features(red)["saturation"] == pytest.approx(1.0)
    assert quality_features(_textured_clip())["contrast"] > 30.0


def test_file_metadata_is_carried_and_nan_without_a_file() -> None:
    clip = _textured_clip()
    without = quality_features(clip)
    assert set(without) == set(FEATURE_NAMES)
    assert all(math.isnan(without[name]) for name in FILE_FEATURES)
    meta = VideoMeta(frame_count=48, fps=24.0, width=640, height=480)
    with_file = quality_features(clip, meta)
    assert with_file["duration"] == pytest.approx(2.0)
    assert (with_file["frame_count"], with_file["fps"]) == (48.0, 24.0)
    assert (with_file["width"], with_file["height"]) == (640.0, 480.0)


@pytest.mark.parametrize("bad", [
    np.zeros((4, 16, 16), dtype=np.uint8),
    np.zeros((4, 16, 16, 3), dtype=np.float32),
    np.zeros((4, 2, 16, 3), dtype=np.uint8),
])
def test_bad_clips_are_rejected(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        quality_features(bad)
