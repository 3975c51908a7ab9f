"""Windows and references load with one query, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from monitor.features import FEATURE_NAMES
from monitor.profile import ReferenceProfile
from monitor.reference import store_reference
from tests.factories import make_record

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _profile(rows: int = 6) -> ReferenceProfile:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), size=rows)
    features = [{name: float(i) for name in FEATURE_NAMES} for i in range(rows)]
    return ReferenceProfile.build(
        label_names=("a", "b", "c"), true_labels=np.arange(rows) % 3,
        probabilities=probabilities, embeddings=rng.normal(size=(rows, 4)).astype(np.float32),
        features=features)


def test_windows_select_by_version_source_time_and_count(repository) -> None:
    records = [make_record(i, created_at=T0 + timedelta(minutes=i)) for i in range(10)]
    other = [make_record(100, model_version="2", created_at=T0),
             make_record(101, source="reference", created_at=T0)]
    repository.add_predictions(records + other)

    everything = repository.load_window("m", "1")
    assert list(everything.frame["id"]) == [r.id for r in records]  # time order
    assert everything.embeddings.shape == (10, 8)
    np.testing.assert_array_equal(everything.embeddings[3], np.arange(8) + 3)

    timed = repository.load_window("m", "1", since=T0 + timedelta(minutes=2),
                                   until=T0 + timedelta(minutes=5))
    assert list(timed.frame["id"]) == [r.id for r in records[2:5]]
    newest = repository.load_window("m", "1", last=4)
    assert list(newest.frame["id"]) == [r.id for r in records[-4:]]
    assert len(repository.load_window("m", "3")) == 0
    assert pd.isna(everything.frame["fps"]).all()  # stored NULL, read back as missing


def test_a_reference_profile_is_stored_once_and_loads_like_a_window(repository) -> None:
    profile = _profile()
    assert store_reference(repository, profile, "m", "1") == 6
    assert store_reference(repository, profile, "m", "1") == 0
    reference = repository.load_window("m", "1", source="reference")
    assert len(reference) == 6
    assert sorted(reference.frame["true_label"]) == sorted(profile.table["true_label"])
    assert sorted(map(tuple, reference.embeddings.tolist())) == sorted(
        map(tuple, profile.embeddings.tolist()))
    assert len(repository.load_window("m", "1")) == 0  # production untouched


def _race(n: int, work) -> list:  # type: ignore[no-untyped-def]
    """``work()`` in ``n`` threads released together; their results."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = work()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_monitors_racing_store_a_reference_profile_exactly_once(repository) -> None:
    profile = _profile(40)
    for trial in range(4):
        version = f"race-{trial}"
        added = _race(2, lambda: store_reference(repository, profile, "m", version))
        assert sorted(added) == [0, 40], added
        assert repository.count(source="reference", model_version=version) == 40


def test_retrain_requests_racing_queue_one_pending_decision(repository) -> None:
    from monitor.retrain_policy import RetrainDecision
    from monitor.store.retrains import RetrainRepository

    retrains = RetrainRepository(repository.engine)
    request = RetrainDecision(True, ["requested"], [])
    ids = _race(4, lambda: retrains.record(request, "m", "1"))
    assert len(set(ids)) == 1
    assert retrains.pending("m")["id"] == ids[0]
    assert retrains.record(request, "m", "1") == ids[0]  # asked again: the same one
    assert retrains.start(ids[0])
    assert retrains.record(request, "m", "1") != ids[0]  # once it runs, a new one may queue


def test_a_window_is_reported_only_after_its_lateness(repository) -> None:
    from monitor.job import run_report_job
    from monitor.settings import MonitorSettings
    from monitor.store.reports import ReportRepository

    from tests.factories import production_records, reference_profile

    hour = datetime(2026, 11, 2, 10, tzinfo=UTC)
    repository.add_predictions(production_records(60, hour - timedelta(minutes=30), seed=1))
    settings = MonitorSettings(interval_s=3600, window_minutes=60, lateness_s=15, min_rows=5)
    reports = ReportRepository(repository.engine)
    profile = reference_profile()
    early = run_report_job(settings, repository, reports, lambda *_: profile,
                           now=hour + timedelta(seconds=10))
    assert early.window_end == hour - timedelta(hours=1)  # the last hour may still be spooled
    late = run_report_job(settings, repository, reports, lambda *_: profile,
                          now=hour + timedelta(seconds=20))
    assert late.window_end == hour and late.status == "reported"


def test_a_large_window_comes_as_a_database_drawn_uniform_sample_with_exact_counts(
        repository) -> None:
    from dataclasses import replace

    from tests.factories import production_records

    records = production_records(3000, T0, seed=3)
    # a quarter labeled, two thirds of those right
    records = [replace(r, true_label=(r.predicted_label if i % 12 else "a"))
               if i % 4 == 0 else r for i, r in enumerate(records)]
    repository.add_predictions(records)
    end = T0 + timedelta(hours=2)

    whole = repository.load_window("m", "1", until=end, sample=5000)
    assert len(whole) == 3000 and whole.population is None and not whole.sampled

    sample = repository.load_window("m", "1", until=end, sample=500)
    assert len(sample) == 500 and sample.total_rows == 3000 and sample.sampled
    assert sample.embeddings.shape == (500, 16)
    population = sample.population
    expected = pd.Series([r.predicted_label for r in records]).value_counts().to_dict()
    assert population.class_counts == expected
    assert population.labeled_rows == 750
    assert list(sample.frame["created_at"]) == sorted(sample.frame["created_at"])
    # the same rows each time, spread over the whole window, in the window's class mix
    again = repository.load_window("m", "1", until=end, sample=500)
    assert list(again.frame["id"]) == list(sample.frame["id"])
    seconds = (pd.to_datetime(sample.frame["created_at"], utc=True) - T0).dt.total_seconds()
    assert seconds.min() < 100 and seconds.max() > 2900 and 1200 < seconds.median() < 1800
    shares = sample.frame["predicted_label"].value_counts(normalize=True)
    assert all(abs(shares[c] - expected[c] / 3000) < 0.07 for c in expected)
    # the newest M rows, sampled
    newest = repository.load_window("m", "1", until=end, last=1000, sample=200)
    assert newest.total_rows == 1000 and len(newest) == 200
    assert min(pd.to_datetime(newest.frame["created_at"], utc=True)) >= T0 + timedelta(
        seconds=2000)


def test_the_report_job_tests_a_sample_and_counts_the_whole_window(repository) -> None:
    from dataclasses import replace

    from monitor.job import run_report_job
    from monitor.settings import MonitorSettings
    from monitor.store.reports import ReportRepository
    from tests.factories import production_records, reference_profile

    records = production_records(2400, T0, seed=4)
    records = [replace(r, true_label=(r.predicted_label if i % 3 else "a"))
               if i % 2 == 0 else r for i, r in enumerate(records)]
    repository.add_predictions(records)
    labeled = [r for r in records if r.true_label is not None]
    right = sum(r.true_label == r.predicted_label for r in labeled) / len(labeled)
    reports = ReportRepository(repository.engine)
    settings = MonitorSettings(interval_s=3600, lateness_s=0, window_minutes=60,
                               sample_rows=400)
    outcome = run_report_job(settings, repository, reports,
                             lambda *_: reference_profile(), now=T0 + timedelta(hours=1))
    summary = reports.get(outcome.report_id)["summary"]
    assert summary["rows"] == 2400 and summary["sample_rows"] == 400
    assert summary["labeled_rows"] == 1200
    assert summary["realized_accuracy"] == pytest.approx(right)
    assert summary["reference_sample_rows"] is None  # 300 reference rows: all tested
    assert "window tests on 400 of 2,400 rows (a uniform sample drawn by the database); " \
           "counts, class mix, realized accuracy and label coverage over every row" \
           in summary["reasons"]
    shares = summary["class_frequencies"]["current"]
    assert shares["a"] == pytest.approx(sum(r.predicted_label == "a" for r in records) / 2400)
