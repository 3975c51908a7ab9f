"""The champion/challenger gate: a paired difference on held-out videos, its interval
clustered by video, and the decision the interval's low end makes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.gate import gate, paired_difference


def paired_table(both: int, challenger_only: int, champion_only: int, neither: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Right/wrong of both models on clips laid out as a 2 x 2 paired table."""
    champion = np.r_[np.ones(both), np.zeros(challenger_only), np.ones(champion_only),
                     np.zeros(neither)].astype(bool)
    challenger = np.r_[np.ones(both), np.ones(challenger_only), np.zeros(champion_only),
                       np.zeros(neither)].astype(bool)
    return champion, challenger


def test_the_interval_of_a_known_paired_table_matches_the_textbook_one() -> None:
    # 200 clips of 200 videos: 30 right only for the challenger, 10 only for the champion.
    champion, challenger = paired_table(140, 30, 10, 20)
    result = paired_difference(champion, challenger)
    assert result.difference == pytest.approx(0.1)
    assert (result.challenger_only, result.champion_only, result.clips, result.videos) == \
        (30, 10, 200, 200)
    # Wald interval of a paired difference: se = sqrt(b + c - (b - c)^2 / n) / n.
    se = math.sqrt(30 + 10 - 20 ** 2 / 200) / 200
    assert result.low == pytest.approx(0.1 - 1.96 * se, abs=0.008)
    assert result.high == pytest.approx(0.1 + 1.96 * se, abs=0.008)


def test_clips_of_one_video_count_as_one_draw() -> None:
    champion, challenger = paired_table(140, 30, 10, 20)
    single = paired_difference(champion, challenger)
    # The same table with every video cut into 8 identical clips: 1,600 clips, but the
    # evidence of 200 videos. Taken clip by clip the interval would shrink by sqrt(8).
    videos = np.repeat(np.arange(200), 8)
    clustered = paired_difference(np.repeat(champion, 8), np.repeat(challenger, 8), videos)
    naive = paired_difference(np.repeat(champion, 8), np.repeat(challenger, 8))
    width = single.high - single.low
    assert clustered.videos == 200 and clustered.clips == 1600
    assert clustered.high - clustered.low == pytest.approx(width, rel=0.1)
    assert naive.high - naive.low == pytest.approx(width / math.sqrt(8), rel=0.15)


def test_the_gate_promotes_on_the_interval_s_low_end_not_on_the_point() -> None:
    clear = paired_difference(*paired_table(140, 30, 10, 20))  # +0.10, low about +0.04
    narrow = paired_difference(*paired_table(30, 4, 1, 5))  # +0.075 on 40 clips
    original_same = paired_difference(*paired_table(290, 2, 2, 6))
    original_lost = paired_difference(*paired_table(270, 0, 20, 10))  # -0.067

    verdict = gate(clear, original_same, margin=0.02, tolerance=0.02)
    assert verdict.promote and "clears the margin" in verdict.reason
    assert verdict.recent is clear and verdict.champion_recent == clear.champion
    # The point estimate clears the margin, the interval does not: no promotion.
    held_back = gate(narrow, original_same, margin=0.02, tolerance=0.02)
    assert narrow.difference > 0.02 and narrow.low < 0.02 and not held_back.promote
    assert "under the margin" in held_back.reason
    lost = gate(clear, original_lost, margin=0.02, tolerance=0.02, relabeled=["left"])
    assert not lost.promote and "without relabeled left" in lost.reason
    # Without original test clips (every class relabeled) only the recent rule applies.
    empty = paired_difference(np.zeros(0, bool), np.zeros(0, bool))
    assert empty.clips == 0 and math.isnan(empty.difference)
    assert gate(clear, empty, margin=0.02, tolerance=0.02).promote
    assert not gate(empty, original_same, margin=0.02, tolerance=0.02).promote
