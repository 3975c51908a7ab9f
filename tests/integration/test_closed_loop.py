"""The closed loop on real parts: drift reports -> one retrain run -> gate -> champion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pytest

from monitor.objects.clips import ClipStore
from monitor.closed_loop import evaluate_retrain, policy_from, start_due_retrain
from monitor.features import quality_features_batch
from monitor.job import run_report_job
from monitor.settings import MonitorSettings, RetrainSettings, Settings, TrainSettings
from monitor.store import PredictionRepository, create_store_engine, upgrade_database
from monitor.store.records import PredictionRecord, encode_embedding
from monitor.store.reports import ReportRepository
from monitor.store.retrains import RetrainRepository
from training import registry
from training.job import run_training
from training.retrain import run_retrain
from training.synthetic import CLASS_NAMES, ClipSpec, generate_dataset

H = datetime(2026, 11, 3, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def champion_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow store with a (briefly) trained champion, copied per test."""
    root = tmp_path_factory.mktemp("loop-mlflow")
    settings = _settings(root)
    assert run_training(settings).model_version == "1"
    return root


def _settings(root: Path, **retrain: object) -> Settings:
    return Settings(
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        mlflow_artifacts_dir=root / "mlartifacts", experiment_name="loop",
        model_name="loop-model", database_url=f"sqlite:///{root / 'vidmon.db'}",
        clip_dir=root / "clips",
        train=TrainSettings(synthetic_dir=root / "data",
                            clips_per_class=24, test_clips_per_class=3, epochs=8,
                            width_multiplier=8, batch_size=16),
        monitor=MonitorSettings(interval_s=3600, lateness_s=0, window_minutes=60, min_rows=20),
        retrain=RetrainSettings(windows=2, min_labeled=20, cooldown_minutes=90, epochs=1,
                                original_clips_per_class=3, backoff_s=60, max_attempts=2,
                                **retrain))


@pytest.fixture
def loop(champion_store: Path, tmp_path: Path):
    import shutil

    root = tmp_path / "loop"
    shutil.copytree(champion_store, root)
    # The copied SQLite store still names the old artifact folder; point it at the copy.
    mlflow_db = root / "mlflow.db"
    import sqlite3

    with sqlite3.connect(mlflow_db) as db:
        for table, column in (("experiments", "artifact_location"),
                              ("runs", "artifact_uri"), ("model_versions", "source"),
                              ("logged_models", "artifact_location")):
            try:
                db.execute(f"UPDATE {table} SET {column} = REPLACE({column}, ?, ?)",
                           (str(champion_store), str(root)))
            except sqlite3.OperationalError:
                pass
    return root


# What the labeling team now calls the events of six classes (a mirrored camera, say): the
# champion keeps its old answers, so realized accuracy falls and the retrain has a cause.
SWAPPED = {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4}


def _drifted_traffic(settings: Settings, start: datetime, n: int, seed: int) -> None:
    """Brighter clips (a lighting change) served by the champion, labeled as the world now
    names them (six classes swapped in pairs), clips kept."""
    engine = create_store_engine(settings.database_url)
    upgrade_database(engine)
    champion = registry.RegistrySource(settings).load(settings.model_uri, "cpu")
    spec = ClipSpec(settings.train.frames, settings.train.height, settings.train.width)
    clips, labels = generate_dataset(n // len(CLASS_NAMES) + 1, seed, spec)
    clips = np.clip(clips.astype(np.int16) + 70, 0, 255).astype(np.uint8)[:n]
    labels = labels[:n]
    probabilities, embeddings, _ = champion.predict(clips)
    names = champion.label_names
    features = quality_features_batch(clips)
    store = ClipStore(settings.clip_dir)
    records = [PredictionRecord(
        model_name=settings.model_name, model_version=str(champion.version),
        predicted_label=names[int(probabilities[i].argmax())],
        confidence=float(probabilities[i].max()), entropy=0.1,
        probabilities={c: float(p) for c, p in zip(names, probabilities[i])},
        embedding=encode_embedding(embeddings[i]), features=features[i],
        clip_path=store.save(clips[i]),
        true_label=CLASS_NAMES[SWAPPED.get(int(labels[i]), int(labels[i]))],
        created_at=start + timedelta(seconds=20 * i)) for i in range(n)]
    PredictionRepository(engine).add_predictions(records)
    engine.dispose()


def _run_windows(settings: Settings, ends: list[datetime]) -> list[str]:
    engine = create_store_engine(settings.database_url)
    predictions, reports = PredictionRepository(engine), ReportRepository(engine)
    retrains = RetrainRepository(engine)
    load_profile = registry.profile_loader(settings)
    policy = policy_from(settings)
    decisions = []
    for end in ends:
        outcome = run_report_job(settings.monitor, predictions, reports, load_profile, now=end)
        assert outcome.status == "reported", outcome
        decisions.append(evaluate_retrain(policy, outcome.model_name, outcome.model_version,
                                          end, predictions, reports, retrains, load_profile))
        start_due_retrain(retrains, settings.retrain, end,
                          starter=lambda decision_id: run_retrain(settings, decision_id))
    engine.dispose()
    return decisions


def _retrain_runs(settings: Settings) -> list:
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return mlflow.search_runs(experiment_names=[settings.experiment_name],
                              filter_string="tags.`vidmon.job` = 'retrain'",
                              output_format="list")


def test_drift_held_for_two_windows_starts_exactly_one_retrain_with_its_cause(loop: Path) -> None:
    settings = _settings(loop)
    _drifted_traffic(settings, H - timedelta(hours=3), n=480, seed=11)  # 3 hours of traffic
    decisions = _run_windows(settings, [H - timedelta(hours=2), H - timedelta(hours=1), H])

    retrains = RetrainRepository(create_store_engine(settings.database_url))
    first, second, third = (retrains.get(d) for d in decisions)
    assert not first["triggered"] and "at risk in 1 of 2" in first["reasons"][0]
    assert second["triggered"] and second["status"] in ("promoted", "rejected")
    assert not third["triggered"] and "cooldown" in third["reasons"][-1]

    runs = _retrain_runs(settings)
    assert len(runs) == 1
    tags = runs[0].data.tags
    assert tags["vidmon.decision_id"] == second["id"]
    assert tags["vidmon.trigger.report_ids"] == ",".join(second["report_ids"])
    assert len(second["report_ids"]) == 2 and "embedding_p=" in tags["vidmon.trigger.drift_scores"]
    assert tags["vidmon.parent_version"] == "1"
    # The original data is the champion's training dataset, split as it was when trained.
    relabeled = [c for c in tags["vidmon.relabeled_classes"].split(",") if c != "none"]
    params = runs[0].data.params
    assert params["original_data"] == tags["vidmon.data.train"]
    assert params["original_test_clips"] == str(3 * (10 - len(relabeled)))
    assert params["original_clips"] == str(3 * (10 - len(relabeled)))  # 3 a class, as set
    assert second["mlflow_run_id"] == runs[0].info.run_id
    client = mlflow.MlflowClient()
    champion = str(client.get_model_version_by_alias("loop-model", "champion").version)
    assert champion == ("2" if second["status"] == "promoted" else "1")
    # a promoted challenger is no longer one; a rejected one keeps the alias
    aliases = client.get_registered_model("loop-model").aliases
    assert aliases.get("challenger") == (None if champion == "2" else 2)
    assert second["created_at"] <= second["finished_at"]
    assert second["gate"]["reason"]


def test_a_worse_challenger_is_not_promoted(loop: Path) -> None:
    settings = _settings(loop, learning_rate=5.0)  # a step this large wrecks the weights
    _drifted_traffic(settings, H - timedelta(hours=2), n=320, seed=12)
    decisions = _run_windows(settings, [H - timedelta(hours=1), H])
    decision = RetrainRepository(create_store_engine(settings.database_url)).get(decisions[1])
    assert decision["status"] == "rejected"
    result = decision["gate"]
    assert not result["promote"]
    recent, original = result["recent"], result["original"]
    assert ("under the margin" in result["reason"] if recent["low"] < 0.02
            else "original test accuracy" in result["reason"] and original["low"] < -0.02)
    assert recent["clips"] >= 30 and recent["videos"] == recent["clips"]
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("loop-model", "champion").version) == "1"


def test_a_retrain_that_cannot_reach_mlflow_fails_cleanly_and_is_retried_later(
    loop: Path, tmp_path: Path
) -> None:
    settings = _settings(loop).model_copy(update={
        "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'missing' / 'dir' / 'mlflow.db'}"})
    engine = create_store_engine(settings.database_url)
    upgrade_database(engine)
    retrains = RetrainRepository(engine)
    from monitor.retrain_policy import RetrainDecision

    decision_id = retrains.record(RetrainDecision(True, ["test"], []), "loop-model", "1")
    with pytest.raises(Exception):
        run_retrain(settings, decision_id)
    failed = retrains.get(decision_id)
    assert failed["status"] == "failed" and failed["attempts"] == 1 and failed["error"]
    now = datetime.now(UTC)
    assert retrains.next_due(now, max_attempts=2) is None  # backing off
    assert retrains.next_due(now + timedelta(minutes=2), max_attempts=2)["id"] == decision_id
    assert retrains.next_due(now + timedelta(minutes=2), max_attempts=1) is None  # gave up


def test_a_retrain_decided_for_a_replaced_champion_is_cancelled_not_promoted(
    loop: Path,
) -> None:
    from monitor.retrain_policy import RetrainDecision
    from monitor.store.alerts import AlertRepository

    settings = _settings(loop)  # the champion is v1
    engine = create_store_engine(settings.database_url)
    upgrade_database(engine)
    retrains = RetrainRepository(engine)
    stale = retrains.record(RetrainDecision(True, ["drift on v7"], []), "loop-model", "7")
    outcome = run_retrain(settings, stale)
    assert outcome.status == "cancelled" and "champion is v1 now, not v7" in outcome.reason
    cancelled = retrains.get(stale)
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    assert retrains.next_due(datetime.now(UTC) + timedelta(days=1), max_attempts=3) is None
    alerts = AlertRepository(engine).list(limit=5)
    assert [a["kind"] for a in alerts] == ["retrain_cancelled"]
    assert not _retrain_runs(settings)  # nothing trained, nothing registered
    # A pending decision for a version that is no longer served gives way to a decision
    # for the champion instead of swallowing it.
    old = retrains.record(RetrainDecision(True, ["drift on v7"], []), "loop-model", "7")
    new = retrains.record(RetrainDecision(True, ["drift on v1"], []), "loop-model", "1")
    assert new != old and retrains.pending("loop-model")["id"] == new
    assert retrains.get(old)["status"] == "cancelled"
    assert "superseded by a decision for v1" in retrains.get(old)["error"]
    assert retrains.record(RetrainDecision(True, ["again"], []), "loop-model", "1") == new
    engine.dispose()


def test_an_attempt_ends_the_mlflow_run_a_killed_attempt_left_running(loop: Path) -> None:
    from monitor.retrain_policy import RetrainDecision
    from training.tracking import configure_mlflow

    settings = _settings(loop)
    engine = create_store_engine(settings.database_url)
    upgrade_database(engine)
    retrains = RetrainRepository(engine)
    decision = retrains.record(RetrainDecision(True, ["drift on v7"], []), "loop-model", "7")
    assert retrains.start(decision)
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    orphan = client.create_run(configure_mlflow(settings)).info.run_id  # its process died
    retrains.attach_run(decision, orphan)
    retrains.fail(decision, "retrain process exited with code -9", timedelta(0),
                  datetime.now(UTC))
    assert retrains.start(decision)
    assert run_retrain(settings, decision).status == "cancelled"  # attempt 2 ran
    run = client.get_run(orphan)
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert run.data.tags["vidmon.abandoned"] == f"attempt 2 of retrain {decision} took over"
    engine.dispose()


def test_a_retrain_process_that_dies_is_marked_failed_for_a_retry(tmp_path: Path) -> None:
    import sys
    import time

    from monitor.closed_loop import subprocess_starter
    from monitor.retrain_policy import RetrainDecision

    engine = create_store_engine(f"sqlite:///{tmp_path / 'vidmon.db'}")
    upgrade_database(engine)
    retrains = RetrainRepository(engine)
    decision_id = retrains.record(RetrainDecision(True, ["test"], []), "m", "1")
    crashing = subprocess_starter(retrains, timedelta(seconds=60),
                                  command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    started = start_due_retrain(retrains, RetrainSettings(), datetime.now(UTC), crashing)
    assert started == decision_id
    assert start_due_retrain(retrains, RetrainSettings(), datetime.now(UTC), crashing) is None
    deadline = time.monotonic() + 20
    while retrains.get(decision_id)["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    failed = retrains.get(decision_id)
    assert failed["status"] == "failed" and "exited with code 3" in failed["error"]


def test_retrains_still_running_stop_with_their_monitor_and_wait_for_a_retry(
        tmp_path: Path) -> None:
    """Nothing a monitor (or the demo) started outlives it: a retrain still running is
    terminated when the monitor closes, and its decision is failed, never left running."""
    import os
    import sys
    import time

    from monitor.closed_loop import subprocess_starter
    from monitor.retrain_policy import RetrainDecision

    engine = create_store_engine(f"sqlite:///{tmp_path / 'vidmon.db'}")
    upgrade_database(engine)
    retrains = RetrainRepository(engine)
    decision_id = retrains.record(RetrainDecision(True, ["test"], []), "m", "1")
    endless = subprocess_starter(retrains, timedelta(seconds=60), command=[
        sys.executable, "-c", "import time; time.sleep(600)"])
    assert start_due_retrain(retrains, RetrainSettings(), datetime.now(UTC), endless)
    (process,) = endless._running.values()
    assert endless.running() == [decision_id]
    began = time.monotonic()
    assert endless.stop(grace_s=5) == [decision_id]
    assert time.monotonic() - began < 5  # it took SIGTERM
    assert process.poll() is not None and endless.running() == []
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)
    stopped = retrains.get(decision_id)
    assert stopped["status"] == "failed" and "stopped with the monitor" in stopped["error"]
    engine.dispose()
