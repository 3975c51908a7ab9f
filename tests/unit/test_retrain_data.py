"""What a retrain learns from: relabeled classes and the held-out split."""

from __future__ import annotations

import numpy as np
import pytest

from training.gate import relabeled_classes
from training.retrain import recent_repeats, stratified_split


def test_a_weak_class_that_stays_weak_is_not_relabeled_and_a_swapped_one_is() -> None:
    # Reference: class 0 right 37 of 100 (a weak class), class 1 right 95 of 100.
    right, clips = np.array([37, 95, 90]), np.array([100, 100, 100])
    rng = np.random.default_rng(0)
    true = np.repeat([0, 1, 2], 60)
    predicted = true.copy()
    predicted[:60] = np.where(rng.random(60) < 0.37, 0, 2)  # still 37 % right: weak
    predicted[60:120] = np.where(rng.random(60) < 0.05, 1, 0)  # now mostly called 0
    found = relabeled_classes(true, predicted, 3, reference_right=right,
                              reference_clips=clips, min_clips=5)
    assert found == [1]
    # Under an absolute bar of 0.5, class 0 would have been called relabeled too.
    assert np.mean(predicted[:60] == 0) < 0.5


def test_a_drop_must_be_significant_and_large_to_relabel() -> None:
    right, clips = np.array([19, 19]), np.array([20, 20])
    true = np.repeat([0, 1], 6)
    predicted = np.array([0, 0, 1, 1, 1, 1] + [1] * 6)
    # Class 0: 2 of 6 right against 19 of 20 on the reference: significant at 5 % split
    # over two classes, and under half of its reference accuracy.
    assert relabeled_classes(true, predicted, 2, reference_right=right,
                             reference_clips=clips, min_clips=5) == [0]
    # A blur that costs class 0 a third of its accuracy is not a new meaning.
    true = np.repeat([0, 1], 60)
    predicted = np.r_[np.where(np.arange(60) < 38, 0, 1), np.ones(60, dtype=np.int64)]
    assert relabeled_classes(true, predicted, 2, reference_right=right,
                             reference_clips=clips, min_clips=5) == []
    # Too few labels to judge at all.
    assert relabeled_classes(true[:4], predicted[:4], 2, reference_right=right,
                             reference_clips=clips, min_clips=5) == []


def test_relabeled_classes_weigh_queue_labels_as_the_traffic() -> None:
    # The queue chose class 0's 14 mistakes with chance 0.8 and its 6 right clips with
    # chance 0.05: 30 % right among the labels, about 87 % on the traffic.
    right, clips = np.array([95, 95]), np.array([100, 100])
    true = np.zeros(20, dtype=np.int64)
    unweighted = np.array([1] * 14 + [0] * 6)  # 30 % right among the labels
    assert relabeled_classes(true, unweighted, 2, reference_right=right,
                             reference_clips=clips, min_clips=5) == [0]
    weights = 1 / np.array([0.8] * 14 + [0.05] * 6)
    assert relabeled_classes(true, unweighted, 2, reference_right=right,
                             reference_clips=clips, min_clips=5, weights=weights) == []


def test_recent_clips_repeat_to_their_share_of_an_epoch() -> None:
    assert recent_repeats(84, 180, 0.5) == 3      # 252 of 432 clips recent
    assert recent_repeats(315, 300, 0.5) == 1     # already half
    assert recent_repeats(10, 300, 0.5) == 4      # capped: no learning ten clips by heart
    assert recent_repeats(84, 180, 0.0) == 1 and recent_repeats(0, 180, 0.5) == 1
    assert recent_repeats(60, 180, 0.5) == 3      # exactly half needs no extra repeat


def test_the_held_out_part_keeps_every_class_in_proportion() -> None:
    labels = np.repeat(np.arange(10), [28, 40, 38, 40, 35, 35, 34, 29, 38, 26])
    train, held = stratified_split(labels, 0.3, seed=343)
    assert len(np.intersect1d(train, held)) == 0
    assert len(train) + len(held) == len(labels)
    counts = np.bincount(labels[held], minlength=10)
    expected = np.round(np.bincount(labels) * 0.3)
    assert np.array_equal(counts, expected)
    again = stratified_split(labels, 0.3, seed=343)
    assert np.array_equal(again[1], held)  # reproducible


def test_a_class_with_two_clips_still_holds_one_out() -> None:
    labels = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    _, held = stratified_split(labels, 0.1, seed=0)
    assert set(labels[held]) == {0, 1}


def test_a_small_label_set_holds_out_enough_for_a_reference_profile() -> None:
    labels = np.repeat(np.arange(4), 12)  # 48 labels: 30 % would hold out 12
    train, held = stratified_split(labels, 0.3, seed=1, min_held=20)
    assert len(held) == 20 and len(train) == 28 and not np.intersect1d(train, held).size
    assert set(labels[held]) == {0, 1, 2, 3}
    # Never more than half: the challenger still needs clips to learn from.
    _, held = stratified_split(labels, 0.3, seed=1, min_held=40)
    assert len(held) == 24


def test_a_retrain_waits_for_labels_enough_for_its_reference_profile() -> None:
    from monitor.settings import RetrainSettings

    assert RetrainSettings(min_labeled=50).labeled_needed(min_rows=30) == 60
    assert RetrainSettings(min_labeled=450).labeled_needed(min_rows=30) == 450


def test_held_out_clips_are_drawn_to_look_like_the_traffic_not_its_mistakes() -> None:
    from datetime import UTC, datetime

    from monitor.store.records import LabeledClip
    from training.retrain import representative_weights

    at = datetime(2026, 11, 25, tzinfo=UTC)
    rows = [LabeledClip(str(i), "p", "a", at, {}, inclusion)
            for i, inclusion in enumerate([0.05] * 50 + [0.9] * 50 + [None] * 4)]
    weights = representative_weights(rows)
    assert weights[:50].tolist() == [20.0] * 50 and weights[50] == pytest.approx(1 / 0.9)
    assert weights[-1] == pytest.approx(np.median(weights[:100]))
    assert representative_weights(rows[-4:]) is None  # no queue: plain stratified split
    labels = np.zeros(104, dtype=np.int64)
    rare = 0
    for seed in range(20):
        _, held = stratified_split(labels, 0.3, seed=seed, weights=weights)
        assert len(held) == 31
        rare += np.sum(held < 50)  # clips the queue seldom picks stand for many others
    assert rare / (20 * 31) > 0.75


def test_held_out_classes_come_in_the_traffic_s_proportions_not_the_queue_s() -> None:
    # The queue asked for 40 labels of class 1 (error-prone: chosen with chance 0.8) and
    # 40 of class 0 (chosen with chance 0.1): traffic had about 400 of class 0 and 50 of 1.
    labels = np.repeat([0, 1], 40)
    weights = np.repeat([10.0, 1.25], 40)
    _, held = stratified_split(labels, 0.3, seed=0, weights=weights)
    counts = np.bincount(labels[held], minlength=2)
    assert counts.tolist() == [21, 3]  # 24 held out, 400:50 of them, not 40:40


def test_a_video_s_clips_never_straddle_the_split() -> None:
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 9, 60)  # 60 videos of 1 to 8 clips
    videos = np.repeat([f"video-{i}" for i in range(60)], sizes)
    labels = np.repeat(np.arange(60) % 4, sizes)
    for seed in range(10):
        train, held = stratified_split(labels, 0.3, seed=seed, min_held=30, videos=videos)
        assert not set(videos[train]) & set(videos[held])
        assert len(train) + len(held) == len(labels)
        assert set(labels[held]) == {0, 1, 2, 3}
        assert 30 <= len(held) <= len(labels) // 2
    # The same clips split clip by clip put most videos on both sides.
    train, held = stratified_split(labels, 0.3, seed=0)
    assert len(set(videos[train]) & set(videos[held])) > 10


def test_registering_a_model_near_chance_warns_about_the_card() -> None:
    from training.register import reference_warnings

    classes = {"a": 0.30, "b": 0.40, "c": 0.35}
    near = reference_warnings(0.35, classes, {c: 10 for c in classes}, chance=1 / 3)
    assert len(near) == 1 and "near chance" in near[0] and "card" in near[0]
    fine = {"a": 0.9, "b": 0.8, "c": 0.0}
    blind = reference_warnings(0.57, fine, {c: 10 for c in fine}, chance=1 / 3)
    assert blind == ["the model gets no reference clip of c right"]
    assert reference_warnings(0.9, {"a": 0.9, "b": 0.9}, {"a": 5, "b": 5}, chance=0.5) == []
