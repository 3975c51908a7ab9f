"""The moving-shapes generator: determinism, balance, and that each class moves as named."""

from __future__ import annotations

import av
import numpy as np
import pytest

from training.synthetic import CLASS_NAMES, ClipSpec, generate_clip, generate_dataset
from training.video_io import write_video

SPEC = ClipSpec(frames=16, height=32, width=32)


def _shape_centroids(clip: np.ndarray) -> np.ndarray:
    """Per-frame centroid (x, y) of the pixels that differ from the temporal median."""
    frames = clip.astype(np.float32)
    background = np.median(frames, axis=0)
    moving = np.abs(frames - background).sum(axis=-1) > 60
    ys, xs = np.mgrid[0 : clip.shape[1], 0 : clip.shape[2]]
    counts = moving.sum(axis=(1, 2))
    assert counts.min() > 0, "the shape must be visible in every frame"
    return np.stack([(moving * xs).sum(axis=(1, 2)) / counts,
                     (moving * ys).sum(axis=(1, 2)) / counts], axis=1)


def _clips_of(label: str, n: int = 5) -> list[np.ndarray]:
    index = CLASS_NAMES.index(label)
    return [generate_clip(index, np.random.default_rng(seed), SPEC) for seed in range(n)]


def test_same_seed_gives_same_clips_and_other_seeds_differ() -> None:
    a_clips, a_labels = generate_dataset(3, seed=7, spec=SPEC)
    b_clips, b_labels = generate_dataset(3, seed=7, spec=SPEC)
    c_clips, _ = generate_dataset(3, seed=8, spec=SPEC)
    np.testing.assert_array_equal(a_clips, b_clips)
    np.testing.assert_array_equal(a_labels, b_labels)
    assert not np.array_equal(a_clips, c_clips)


def test_a_clip_does_not_depend_on_the_size_of_its_set() -> None:
    small, _ = generate_dataset(2, seed=3, spec=SPEC)
    large, _ = generate_dataset(5, seed=3, spec=SPEC)
    np.testing.assert_array_equal(small, large[: len(small)])


def test_labels_are_balanced_and_clips_have_the_configured_size() -> None:
    spec = ClipSpec(frames=8, height=24, width=40)
    clips, labels = generate_dataset(4, seed=0, spec=spec)
    assert clips.shape == (4 * len(CLASS_NAMES), 8, 24, 40, 3)
    assert clips.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels), np.full(len(CLASS_NAMES), 4))


@pytest.mark.parametrize(("label", "axis", "sign"), [
    ("move_left", 0, -1), ("move_right", 0, 1), ("move_up", 1, -1), ("move_down", 1, 1),
])
def test_translation_classes_move_the_shape_in_their_direction(
    label: str, axis: int, sign: int
) -> None:
    for clip in _clips_of(label):
        path = _shape_centroids(clip)[:, axis]
        assert sign * (path[-1] - path[0]) > 3.0


@pytest.mark.parametrize(("label", "sign"), [("orbit_cw", 1), ("orbit_ccw", -1)])
def test_orbits_turn_in_their_sense_on_screen(label: str, sign: int) -> None:
    for clip in _clips_of(label):
        centroids = _shape_centroids(clip)
        offset = centroids - centroids.mean(axis=0)
        # atan2 with y pointing down: a growing angle is clockwise on screen.
        turned = np.unwrap(np.arctan2(offset[:, 1], offset[:, 0]))
        assert sign * (turned[-1] - turned[0]) > np.pi


def test_grow_and_shrink_change_the_shape_area_and_blink_hides_it() -> None:
    def area(clip: np.ndarray) -> np.ndarray:
        """Pixels a frame of the shape's colour, sampled at the centre of what changed; a
        growing or shrinking shape covers its centre in every frame."""
        frames = clip.astype(np.float32)
        changed = np.abs(frames[-1] - frames[0]).sum(axis=-1) > 60
        y, x = (int(round(c.mean())) for c in np.nonzero(changed))
        colour = frames[:, y, x].mean(axis=0)
        return (np.abs(frames - colour).sum(axis=-1) < 40).sum(axis=(1, 2))

    for grow, shrink in zip(_clips_of("grow"), _clips_of("shrink")):
        assert area(grow)[-1] > 2 * area(grow)[0]
        assert area(shrink)[0] > 2 * area(shrink)[-1]
    for blink in _clips_of("blink"):
        frame_changes = np.abs(np.diff(blink.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
        assert (frame_changes > 2.0).sum() >= 3
    for steady in _clips_of("steady"):
        assert np.abs(np.diff(steady.astype(np.float32), axis=0)).mean() < 5.0


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_clips_are_written_as_real_video_files(tmp_path, suffix: str) -> None:
    clip = generate_clip(1, np.random.default_rng(0), SPEC)
    path = write_video(clip, tmp_path / f"clip{suffix}", fps=8.0)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        codec = stream.codec_context.name
    assert codec == {".mp4": "h264", ".webm": "vp9"}[suffix]
    assert frames.shape == clip.shape
    assert np.abs(frames.astype(np.int16) - clip).mean() < 8.0


def test_writing_rejects_unknown_suffixes_and_odd_sizes(tmp_path) -> None:
    clip = generate_clip(0, np.random.default_rng(0), SPEC)
    with pytest.raises(ValueError, match="unsupported video suffix"):
        write_video(clip, tmp_path / "clip.xyz")
    with pytest.raises(ValueError, match="even frame sizes"):
        write_video(clip[:, :31], tmp_path / "clip.mp4")
