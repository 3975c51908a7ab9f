"""What a retrain learns from: relabeled classes and the held-out split."""

from __future__ import annotations

import numpy as np

from training.retrain import relabeled_classes, stratified_split


def test_relabeled_classes_are_those_the_champion_now_mostly_gets_wrong() -> None:
    true = np.array([0] * 10 + [1] * 10 + [2] * 3)
    predicted = np.array([1] * 9 + [0] + [1] * 7 + [0] * 3 + [0] * 3)
    # Class 0 is mostly called 1 (relabeled); class 1 is still 70% right; class 2 has too
    # few labels to judge.
    assert relabeled_classes(true, predicted, 3, below=0.5, min_clips=5) == [0]


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
