"""The causal clip sampler, the timeline and the long-video sample, on plain arrays."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.card import ModelCard
from monitor.media.reader import allowed_location
from monitor.media.sampler import ClipSampler, sample_clips
from monitor.media.timeline import ClipAnswer, overall_label, timeline
from serving.videos import expected_clips, in_report_sample

CARD = ModelCard(labels=("a", "b"), frames=4, height=3, width=3, sampling_fps=4.0, stride=1)


def _frame(i: int) -> np.ndarray:
    return np.full((2, 2, 3), i, dtype=np.uint8)


def _source(seconds: float, fps: float) -> list[tuple[float, int]]:
    return [(i / fps, i) for i in range(round(seconds * fps))]


def test_clips_take_the_newest_frame_at_or_before_each_model_time_and_tile_the_video() -> None:
    converted = []

    def convert(i: int) -> np.ndarray:
        converted.append(i)
        return _frame(i)

    sampler = ClipSampler(CARD, hop=4, convert=convert)
    clips = list(sample_clips(iter(_source(3.0, 12.0)), sampler, cover_tail=True))
    # 12 fps source, model frames every 0.25 s: source frames 0, 3, 6, ... each 4 a clip.
    assert [(c.start_s, c.end_s) for c in clips] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    assert [int(f[0, 0, 0]) for f in clips[1].clip] == [12, 15, 18, 21]
    assert converted == list(range(0, 36, 3))  # only the frames a clip uses


def test_a_sliding_window_is_causal_and_its_memory_is_one_clip() -> None:
    sampler = ClipSampler(CARD, hop=1, convert=_frame)
    seen = []
    for t, i in _source(2.0, 8.0):
        for clip in sampler.push(t, i):
            # every frame of a clip had arrived before the clip was given
            assert int(clip.clip[-1, 0, 0, 0]) <= i
            seen.append(clip)
        assert len(sampler.ring) <= CARD.frames
    assert [c.index for c in seen] == list(range(len(seen)))
    assert np.diff([c.start_s for c in seen]).tolist() == [0.25] * (len(seen) - 1)


def test_the_tail_and_a_video_shorter_than_a_clip_are_covered() -> None:
    tail = list(sample_clips(iter(_source(1.5, 8.0)), ClipSampler(CARD, 4, _frame), True))
    assert [(c.start_s, c.end_s) for c in tail] == [(0.0, 1.0), (0.5, 1.5)]
    short = list(sample_clips(iter(_source(0.5, 8.0)), ClipSampler(CARD, 4, _frame), True))
    assert len(short) == 1 and short[0].clip.shape == (4, 2, 2, 3)
    assert [int(f[0, 0, 0]) for f in short[0].clip] == [0, 2, 2, 2]  # padded with the last
    assert list(sample_clips(iter(_source(1.5, 8.0)), ClipSampler(CARD, 4, _frame))) != tail


def test_a_card_that_samples_uploads_uniformly_sees_clips_of_the_set_length() -> None:
    sampler = ClipSampler(ModelCard(("a", "b"), 4, 3, 3), 4, _frame, uniform_clip_s=2.0)
    clips = list(sample_clips(iter(_source(4.0, 8.0)), sampler))
    assert [(c.start_s, c.end_s) for c in clips] == [(0.0, 2.0), (2.0, 4.0)]
    assert [int(f[0, 0, 0]) for f in clips[0].clip] == [0, 4, 8, 12]
    with pytest.raises(ValueError, match="hop"):
        ClipSampler(CARD, 0, _frame)


def test_the_timeline_merges_runs_and_the_label_is_the_mean_answer() -> None:
    clips = [ClipAnswer(i, i + 1, label, conf) for i, (label, conf) in enumerate(
        [("a", 0.9), ("a", 0.7), ("b", 0.6), ("a", 0.8)])]
    assert [(s.start_s, s.end_s, s.label, s.mean_confidence, s.clips)
            for s in timeline(clips)] == [(0, 2, "a", 0.8, 2), (2, 3, "b", 0.6, 1),
                                          (3, 4, "a", 0.8, 1)]
    assert timeline([]) == []
    assert overall_label(["a", "b"], [1.0, 3.0]) == ("b", 0.75)
    assert overall_label(["a", "b"], [0.0, 0.0]) is None


def test_a_long_video_puts_a_bounded_evenly_spaced_sample_in_reports() -> None:
    chosen = [i for i in range(3600) if in_report_sample(i, 3600, 32)]
    assert len(chosen) == 32 and chosen[0] == 0 and max(np.diff(chosen)) <= 113
    assert [i for i in range(10) if in_report_sample(i, 10, 32)] == list(range(10))
    assert not in_report_sample(3600, 3600, 32)  # past the expected length
    assert [i for i in range(50) if in_report_sample(i, None, 4)] == [0, 1, 2, 3]
    assert expected_clips(14.0, CARD, 2.0) == 14 and expected_clips(None, CARD, 2.0) is None


def test_only_urls_under_an_allowed_prefix_may_be_read(tmp_path) -> None:
    allowed = ["http://cams.local:8554/live/", f"file://{tmp_path}/in/"]
    assert allowed_location("http://cams.local:8554/live/7.ts", allowed)
    assert not allowed_location("http://cams.local:8554@evil.example/live/7.ts", allowed)
    assert not allowed_location("https://cams.local:8554/live/7.ts", allowed)
    assert not allowed_location("http://cams.local:8554/other/7.ts", allowed)
    assert allowed_location(f"file://{tmp_path}/in/a.mp4", allowed)
    assert not allowed_location(f"file://{tmp_path}/in/../secret.mp4", allowed)
    assert not allowed_location("concat:a|b", allowed) and not allowed_location("x", allowed)
