"""Each drift scenario changes what it says it changes."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.features import quality_features
from monitor.card import ModelCard
from monitor.preprocess import plan_clips
from simulations.scenarios import MIRRORED, SCENARIOS, SimClip, build
from tests.unit.test_synthetic import _shape_centroids
from training.synthetic import CLASS_NAMES, ClipSpec, generate_named_clip

SPEC = ClipSpec(16, 32, 32)
FULL = 10.0  # an hour well past every onset and ramp below


def _clip(label: str = "move_right", seed: int = 0, frames: int = 16) -> SimClip:
    spec = ClipSpec(frames, SPEC.height, SPEC.width)
    return SimClip(generate_named_clip(label, np.random.default_rng(seed), spec), 8.0, label)


def _feature(clip: SimClip, name: str) -> float:
    return quality_features(clip.frames)[name]


def _apply(name: str, clip: SimClip, **params) -> SimClip:
    return build(name, onset=1.0, ramp=2.0, **params).transform(
        clip, np.random.default_rng(0), FULL)


def test_strength_ramps_from_the_onset() -> None:
    drift = build("lighting", onset=2.0, ramp=4.0)
    assert [drift.strength(h) for h in (0.0, 2.0, 4.0, 6.0, 9.0)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    before = drift.transform(_clip(), np.random.default_rng(0), 1.0)
    np.testing.assert_array_equal(before.frames, _clip().frames)


@pytest.mark.parametrize(("name", "feature", "direction"), [
    ("lighting", "brightness", +1), ("sensor_noise", "noise", +1), ("blur", "sharpness", -1),
    ("occlusion", "brightness", -1),
])
def test_pixel_scenarios_move_their_feature(name: str, feature: str, direction: int) -> None:
    for seed in range(3):
        clip = _clip(seed=seed)
        moved = _apply(name, clip)
        assert moved.frames.shape == clip.frames.shape and moved.frames.dtype == np.uint8
        assert direction * (_feature(moved, feature) - _feature(clip, feature)) > 1.0


def test_camera_shake_makes_a_still_scene_move() -> None:
    still = _clip("steady")
    assert _feature(_apply("camera_shake", still), "motion_energy") > \
        _feature(still, "motion_energy") + 5.0


def test_a_frame_rate_drop_lowers_fps_and_the_served_motion_energy() -> None:
    drop = build("frame_rate_drop", factor=3)
    for seed in range(3):
        clip = _clip(seed=seed)
        recorded = drop.transform(clip, np.random.default_rng(0), FULL)
        assert len(recorded.frames) == 6 and recorded.fps == pytest.approx(8.0 / 3)
        # What the model sees: the service samples 16 frames back out of the 6.
        (segment,) = plan_clips(6, 0.0, ModelCard(("a", "b"), 16, 32, 32))
        served = SimClip(recorded.frames[segment.indices], recorded.fps, clip.label)
        assert _feature(served, "motion_energy") < 0.75 * _feature(clip, "motion_energy")


def test_prior_shift_reweights_the_favoured_classes() -> None:
    shift = build("class_prior_shift", onset=1.0, ramp=0.0, favoured=("steady",), boost=5.0)
    assert shift.label_weights(CLASS_NAMES, 0.0).tolist() == [1.0] * len(CLASS_NAMES)
    weights = shift.label_weights(CLASS_NAMES, FULL)
    assert weights[CLASS_NAMES.index("steady")] == 5.0 and weights.sum() == 14.0


def test_novel_class_draws_grow_with_strength_and_move_diagonally() -> None:
    novel = build("novel_class", onset=1.0, ramp=0.0, share=0.5)
    rng = np.random.default_rng(0)
    assert not any(novel.draws_novel(rng, 0.0) for _ in range(200))
    share = np.mean([novel.draws_novel(rng, FULL) for _ in range(2000)])
    assert share == pytest.approx(0.5, abs=0.05)
    path = _shape_centroids(_clip("move_diagonal").frames)
    assert path[-1, 0] - path[0, 0] > 3 and path[-1, 1] - path[0, 1] > 3


def test_the_mirror_swaps_left_and_right_and_the_sense_of_orbits() -> None:
    mirrored = _apply("mirror", _clip("move_right"))
    path = _shape_centroids(mirrored.frames)[:, 0]
    assert path[-1] < path[0] - 3  # a right-moving event now looks like moving left
    assert mirrored.label == "move_right"  # the true event is unchanged
    assert all(MIRRORED[MIRRORED[c]] == c for c in MIRRORED)
    assert {"move_left", "move_right", "orbit_cw", "orbit_ccw"} == set(MIRRORED)


def test_scenarios_compose_and_unknown_names_are_refused() -> None:
    both = build("lighting", shift=60.0) + build("sensor_noise", sigma=15.0)
    clip = _clip()
    out = both.transform(clip, np.random.default_rng(0), FULL)
    assert _feature(out, "brightness") > _feature(clip, "brightness") + 20
    assert _feature(out, "noise") > _feature(clip, "noise") + 3
    assert {"lighting", "sensor_noise", "blur", "frame_rate_drop", "camera_shake", "occlusion",
            "class_prior_shift", "novel_class", "mirror"} <= set(SCENARIOS)
    with pytest.raises(ValueError, match="unknown scenario"):
        build("earthquake")


def test_every_scenario_says_whether_it_drifts_inputs_or_meaning() -> None:
    kinds = {name: cls.kind for name, cls in SCENARIOS.items()}
    assert kinds.pop("mirror") == "concept"
    assert set(kinds.values()) == {"covariate"}


def test_compose_gives_no_change_one_scenario_or_all_of_them() -> None:
    from simulations.scenarios import Composite, Scenario, build, compose

    assert type(compose()) is Scenario
    blur = build("blur", onset=2.0)
    assert compose(blur) is blur
    both = compose(blur, build("mirror", onset=5.0))
    assert isinstance(both, Composite) and [p.name for p in both.parts] == ["blur", "mirror"]
