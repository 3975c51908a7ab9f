"""Card-driven preprocessing: resize modes, crops, temporal sampling and clip plans."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.card import CardError, ModelCard, load_card
from monitor.preprocess import plan_clips, resize_frames, resized_size

UNIFORM = ModelCard(labels=("a", "b"), frames=4, height=32, width=32)
SHORT_SIDE = ModelCard(labels=("a", "b"), frames=8, height=112, width=112, short_side=128,
                       sampling_fps=15.0, stride=2)


def test_uniform_sampling_spreads_one_clip_over_the_whole_video() -> None:
    (segment,) = plan_clips(31, 10.0, UNIFORM, max_clips=8)
    np.testing.assert_array_equal(segment.indices, [0, 10, 20, 30])
    assert (segment.start_s, segment.end_s) == (0.0, 3.1)
    (short,) = plan_clips(2, 10.0, UNIFORM)
    np.testing.assert_array_equal(short.indices, [0, 0, 1, 1])
    with pytest.raises(ValueError):
        plan_clips(0, 10.0, UNIFORM)


def test_stride_sampling_resamples_to_the_card_rate_and_tiles_long_videos() -> None:
    # 30 fps source, card at 15 fps with stride 2: model frames are 4 source frames apart.
    (one,) = plan_clips(29, 30.0, SHORT_SIDE, max_clips=8)  # exactly one clip's span
    np.testing.assert_array_equal(one.indices, np.arange(0, 29, 4))
    first, second = plan_clips(40, 30.0, SHORT_SIDE, max_clips=8)  # clips cover the video
    assert (first.indices[0], second.indices[-1]) == (0, 39)
    (centre,) = plan_clips(40, 30.0, SHORT_SIDE, max_clips=1)  # one allowed: the centre one
    assert centre.indices[0] == round((40 - 29) / 2)
    segments = plan_clips(600, 30.0, SHORT_SIDE, max_clips=8)  # 20 s
    assert len(segments) == 8
    starts = [s.start_s for s in segments]
    assert starts[0] == 0.0 and segments[-1].end_s == pytest.approx(20.0, abs=0.05)
    assert all(b > a for a, b in zip(starts, starts[1:]))
    assert all(s.end_s - s.start_s == pytest.approx(29 / 30, abs=1 / 30) for s in segments)
    # A clip longer than the video repeats its last frame rather than failing.
    (tiny,) = plan_clips(5, 30.0, SHORT_SIDE)
    assert tiny.indices.max() == 4 and len(tiny.indices) == 8


def test_short_side_resize_keeps_the_aspect_then_centre_crops() -> None:
    assert resized_size(SHORT_SIDE, 240, 320) == (128, 171)
    assert resized_size(SHORT_SIDE, 640, 360) == (228, 128)
    assert resized_size(UNIFORM, 240, 320) == (32, 32)
    frames = np.zeros((3, 240, 320, 3), dtype=np.uint8)
    frames[:, :, 160:] = 255  # right half white: the crop is centred on the seam
    out = resize_frames(frames, SHORT_SIDE)
    assert out.shape == (3, 112, 112, 3)
    assert out[0, 0, 0, 0] == 0 and out[0, 0, -1, 0] == 255


def test_a_card_with_a_missing_or_contradictory_field_is_a_clear_error(tmp_path) -> None:
    good = {"labels": ["a", "b"], "frames": 16, "height": 112, "width": 112,
            "resize": {"short_side": 128}, "sampling": {"fps": 15, "stride": 2},
            "mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2], "embedding_layer": "pool"}
    card = ModelCard.from_dict(good)
    assert (card.short_side, card.sampling_fps, card.stride) == (128, 15.0, 2)
    assert ModelCard.from_dict(card.to_dict()) == card
    for change, message in [
        ({"frames": None}, "frames"), ({"labels": ["a"]}, "at least 2"),
        ({"resize": {"short_side": 100}}, "smaller than the 112x112"),
        ({"std": [0.2, 0, 0.2]}, "positive"), ({"sampling": "every other"}, "uniform"),
        ({"embedding_method": "embed"}, "give one"), ({"colour": "red"}, "unknown fields"),
    ]:
        with pytest.raises(CardError, match=message):
            ModelCard.from_dict({k: v for k, v in {**good, **change}.items() if v is not None})
    path = tmp_path / "card.yaml"
    path.write_text("labels: [a, b]\nframes: 8\nheight: 16\nwidth: 16\nresize: [1, 2]\n")
    with pytest.raises(CardError, match=r"card.yaml: card field 'resize'"):
        load_card(path)
