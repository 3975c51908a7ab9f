"""The labeling queue on a real store: limits, never an id twice, and the report's
importance-weighted accuracy from the labels it asked for."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from monitor.labeling import LabelingQueue
from monitor.report import labeled_estimate
from monitor.settings import MonitorSettings
from monitor.store.labeling import LabelingRepository
from tests.factories import LABELS, production_records, reference_profile

START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def queue_on(repository, at: datetime) -> LabelingQueue:  # type: ignore[no-untyped-def]
    return LabelingQueue(LabelingRepository(repository.engine),
                         MonitorSettings(interval_s=3600, lateness_s=0),
                         lambda name, version: reference_profile(), lambda: at, seed=0)


def test_the_queue_respects_limit_and_never_hands_out_an_id_twice(repository) -> None:
    repository.add_predictions(production_records(200, START, seed=1, spacing_s=5))
    repository.add_predictions(production_records(20, START - timedelta(hours=1), seed=2))
    queue = queue_on(repository, START + timedelta(minutes=30))
    handed: list[str] = []
    for limit in (10, 10, 3, 50):
        rows = queue.next("m", "1", limit)
        assert len(rows) <= limit
        handed += [r.prediction_id for r in rows]
        # Aware on SQLite too: the API hands these out as date-times with an offset.
        assert all(0 < r.inclusion <= 1 and r.created_at.tzinfo is not None
                   and START <= r.created_at for r in rows)
    assert handed and len(handed) == len(set(handed))
    window = repository.load_window("m", "1", since=START)
    considered = window.frame["queue_inclusion"].notna()
    assert considered.all()  # every prediction of the window had its chance
    chosen = set(window.frame.loc[window.frame["queue_selected"].astype(bool), "id"])
    assert set(handed) <= chosen
    # The previous window's predictions are never candidates.
    older = repository.load_window("m", "1", until=START)
    assert older.frame["queue_inclusion"].isna().all()


def test_the_report_weighs_the_queue_labels(repository) -> None:
    records = production_records(300, START, seed=3, spacing_s=5)
    repository.add_predictions(records)
    queue = queue_on(repository, START + timedelta(minutes=40))
    rows = queue.next("m", "1", 40)
    truth = {r.prediction_id: (r.predicted_label if i % 4 else
                               LABELS[(LABELS.index(r.predicted_label) + 1) % 3])
             for i, r in enumerate(rows)}
    repository.apply_feedback(truth, START + timedelta(minutes=41))
    window = repository.load_window("m", "1", since=START)
    estimate, considered = labeled_estimate(window.frame)
    assert considered == 300 and estimate.method == "importance_weighted"
    assert 0 <= estimate.low < estimate.value < estimate.high <= 1
    # Uniform labels, with no queue, keep working.
    other = production_records(50, START + timedelta(hours=2), seed=4, model_version="2")
    repository.add_predictions(other)
    repository.apply_feedback({r.id: r.predicted_label for r in other[:10]}, START)
    uniform, none_considered = labeled_estimate(
        repository.load_window("m", "2").frame)
    assert uniform.method == "uniform" and uniform.value == 1.0 and none_considered == 0


def test_a_retrain_knows_which_labels_the_queue_chose_and_how_likely(repository) -> None:
    records = [replace(r, clip_path=f"clips/{r.id}.npy")
               for r in production_records(120, START, seed=5, spacing_s=5)]
    repository.add_predictions(records)
    rows = queue_on(repository, START + timedelta(minutes=20)).next("m", "1", 15)
    chosen = {r.prediction_id: r.inclusion for r in rows}
    by_hand = [r.id for r in records if r.id not in chosen][:5]
    repository.apply_feedback({**{i: LABELS[0] for i in chosen}, **{i: LABELS[1] for i in by_hand}},
                              START + timedelta(minutes=21))
    clips = {c.id: c for c in repository.labeled_clips("m", since=START)}
    assert set(clips) == set(chosen) | set(by_hand)
    assert all(clips[i].inclusion == pytest.approx(pi) for i, pi in chosen.items())
    assert all(clips[i].inclusion is None for i in by_hand)
