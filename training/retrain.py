"""``vidmon retrain``: a challenger from the champion, judged by the gate, promoted or not.

Runs as its own process (started by the monitor or by hand) so a crash or an out-of-memory
here cannot take monitoring down. The decision row tracks it: running -> promoted |
rejected, or failed (retried by the monitor with backoff).

The champion fine-tuned is the version the decision names. It learns the labeled production
clips that arrived since the drift began, plus a sample of its original training data, read
from the dataset its lineage records; the gate's original test is that dataset's held-out
split, or, for a registered model without training data, its reference videos. The model is
fine-tuned through its own format's module and stored in that format.
"""

from __future__ import annotations

import logging
import math
import traceback
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient

from monitor.alerts import Alerter
from monitor.card import ModelCard
from monitor.clock import Clock, inherited_clock
from monitor.clips import ClipStore
from monitor.profile import ReferenceProfile
from monitor.settings import RetrainSettings, Settings
from monitor.store import PredictionRepository, create_store_engine, upgrade_database
from monitor.store.alerts import AlertRepository
from monitor.store.records import LabeledClip
from monitor.store.reports import ReportRepository
from monitor.store.retrains import RetrainRepository
from training import registry, tracking
from training.datasets import VideoDataset, VideoItem, load_clips
from training.gate import GateResult, accuracy, gate, relabeled_classes
from training.modelfile import copy_network
from training.profiling import profile_of
from training.tracking import REFERENCE_DATA_TAG, TRAIN_DATA_TAG
from training.train import predict, train_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainOutcome:
    """What a retrain produced."""

    decision_id: str
    run_id: str
    challenger_version: str
    gate: GateResult


@dataclass(frozen=True)
class ProductionData:
    """Labeled production clips to learn from, with their stored rows."""

    clips: np.ndarray
    labels: np.ndarray
    rows: list[LabeledClip]


def representative_weights(rows: list[LabeledClip]) -> np.ndarray | None:
    """1/π for clips the labeling queue chose with chance π (it favours likely mistakes),
    the median of those for clips labeled without it; None when the queue chose none.
    Held-out clips drawn by these weights look like the traffic, not like its mistakes:
    they become the challenger's reference profile. The rest, rich in mistakes, train."""
    inverse = np.array([1.0 / r.inclusion if r.inclusion else np.nan for r in rows])
    if np.isnan(inverse).all():
        return None
    return np.where(np.isnan(inverse), np.nanmedian(inverse), inverse)


def _production_data(settings: Settings, predictions: PredictionRepository,
                     label_names: tuple[str, ...], since: datetime | None) -> ProductionData:
    """Labeled production clips of the model since ``since``, with known labels."""
    rows = predictions.labeled_clips(settings.model_name, since=since,
                                     limit=settings.retrain.max_production_clips)
    store = ClipStore(settings.clip_dir)
    clips, known = [], []
    for row in rows:
        if row.true_label not in label_names:
            continue
        try:
            clips.append(store.load(row.clip_path))
        except FileNotFoundError:
            continue  # evicted by the clip store's size limit
        known.append(row)
    if len(known) < len(rows):
        log.info("%d of %d labeled production clips have a label the model knows and a "
                 "stored clip", len(known), len(rows))
    if len(known) < 2:
        raise ValueError(f"{len(known)} labeled production clips in the clip store since "
                         f"{since or 'the start'}; need at least 2 to retrain")
    return ProductionData(np.stack(clips),
                          np.array([label_names.index(row.true_label) for row in known],
                                   dtype=np.int64), known)


def _clip_list(rows: list[LabeledClip], held: np.ndarray) -> str:
    """The production clips a retrain used, as CSV for its MLflow run: its lineage outlives
    the rows and clips that retention deletes later."""
    import csv
    import io

    held_set = set(held.tolist())
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["prediction_id", "created_at", "true_label", "clip_path", "role"])
    writer.writerows([r.id, r.created_at.isoformat(), r.true_label, r.clip_path,
                      "held_out" if i in held_set else "train"] for i, r in enumerate(rows))
    return out.getvalue()


def stratified_split(labels: np.ndarray, fraction: float, seed: int, min_held: int = 0,
                     weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out indices, holding out ``fraction`` of every class (at least one
    clip of each class that has two), so the gate and the new reference profile see the
    classes in the proportions production sent them; then topped up at random to
    ``min_held`` clips while at least half stay for training. With ``weights`` (see
    :func:`representative_weights`), a class's share of the held-out part is its share of
    the weight, and a clip is held out with a chance that grows with its weight."""
    rng = np.random.default_rng(seed)

    def pick(candidates: np.ndarray, k: int) -> np.ndarray:
        if weights is None:
            return rng.permutation(candidates)[:k]
        w = weights[candidates]
        return rng.choice(candidates, size=k, replace=False, p=w / w.sum())

    held: list[int] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        share = len(members) / len(labels) if weights is None else \
            weights[members].sum() / weights.sum()
        cut = int(round(len(labels) * fraction * share))
        cut = min(max(cut, 1 if len(members) > 1 else 0), max(len(members) - 1, 1))
        held.extend(pick(members, cut))
    if not held:  # a single clip: it can only be held out
        held = [0]
    missing = min(min_held, len(labels) // 2) - len(held)
    if missing > 0:
        held.extend(pick(np.setdiff1d(np.arange(len(labels)), held), missing))
    held_idx = np.sort(np.asarray(held, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels)), held_idx), held_idx


MAX_RECENT_REPEATS = 4


def recent_repeats(recent: int, original: int, share: float) -> int:
    """How often each recent training clip appears in an epoch so recent clips make at
    least ``share`` of it (1 to :data:`MAX_RECENT_REPEATS`: more would learn a few clips by
    heart). Measured on the budget demo's mirror retrain (84 recent, 180 original clips):
    its challenger got 0.922 of fresh mirrored traffic right once each, 0.933 three times;
    with 126 recent clips, 0.933 and 0.958."""
    if recent == 0 or share <= 0:
        return 1
    wanted = share * original / ((1 - share) * recent)
    return int(min(MAX_RECENT_REPEATS, max(1, math.ceil(wanted - 1e-9))))


@dataclass(frozen=True)
class OriginalData:
    """The champion's original data: a training sample and the gate's original test."""

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    source: str


def _sample(items: list[VideoItem], per_class: int, seed: int) -> list[VideoItem]:
    rng = np.random.default_rng(seed)
    chosen = []
    for label in sorted({i.label for i in items}):
        members = [i for i in items if i.label == label]
        chosen += [members[k] for k in sorted(rng.permutation(len(members))[:per_class])]
    return chosen


def original_data(settings: Settings, lineage: dict[str, str], card: ModelCard,
                  relabeled: list[str]) -> OriginalData:
    """Original training sample and test set from the dataset in the champion's lineage,
    split exactly as when it was recorded; classes in ``relabeled`` are left out (their
    original labels are out of date)."""
    empty = (np.zeros((0, *card.clip_shape), np.uint8), np.zeros(0, np.int64))
    context = "training" if TRAIN_DATA_TAG in lineage else "reference"
    listing = tracking.dataset_files(lineage, context)
    if listing is None:
        log.warning("the champion records no dataset; retraining on production clips alone")
        return OriginalData(empty, empty, "none")
    dataset = VideoDataset.open(listing)
    tag = TRAIN_DATA_TAG if context == "training" else REFERENCE_DATA_TAG
    if dataset.digest != lineage.get(f"{tag}.digest"):
        log.warning("the files of %s changed since the champion used them", lineage[tag])
    max_frames = settings.serve.max_video_frames

    def load(items: list[VideoItem], what: str) -> tuple[np.ndarray, np.ndarray]:
        items = [i for i in items if i.label not in relabeled]
        if not items:
            return empty
        part = load_clips(items, card, max_frames=max_frames, description=what)
        return part.clips, part.labels

    if context == "training":
        sample = _sample(dataset.split("train"), settings.retrain.original_clips_per_class,
                         settings.train.seed)
        return OriginalData(load(sample, "decoding original training videos"),
                            load(dataset.split("held_out"), "decoding original test videos"),
                            lineage[tag])
    return OriginalData(empty, load(list(dataset.items), "decoding reference videos"),
                        lineage[tag])


def _tags(decision: dict[str, Any], reports: ReportRepository, times: list,
          parent: str) -> dict[str, str]:
    scores = []
    for report_id in decision["report_ids"]:
        report = reports.get(report_id) or {}
        scores.append(f"{report_id}:share={report.get('drift_share')},"
                      f"embedding_p={report.get('embedding_p_value')}")
    return {
        "vidmon.job": "retrain",
        "vidmon.decision_id": decision["id"],
        "vidmon.trigger.report_ids": ",".join(decision["report_ids"]),
        "vidmon.trigger.drift_scores": ";".join(scores),
        "vidmon.trigger.reasons": " | ".join(decision["reasons"])[:4000],
        "vidmon.data_window": f"{min(times).isoformat()}/{max(times).isoformat()}",
        "vidmon.parent_version": parent,
    }


def run_retrain(settings: Settings, decision_id: str) -> RetrainOutcome:
    """Train, evaluate, register and gate a challenger for a triggered decision."""
    engine = create_store_engine(settings.database_url)
    upgrade_database(engine)
    retrains = RetrainRepository(engine)
    decision = retrains.get(decision_id)
    if decision is None or not decision["triggered"]:
        raise ValueError(f"no triggered retrain decision {decision_id!r}")
    if decision["status"] != "running" and not retrains.start(decision_id):
        raise ValueError(f"decision {decision_id} is {decision['status']}, not due")
    clock = inherited_clock()  # the monitor's, when it started this process
    alerter = Alerter(settings, AlertRepository(engine), clock)
    try:
        outcome = _retrain(settings, decision, PredictionRepository(engine),
                           ReportRepository(engine), retrains, clock)
    except Exception as exc:
        retrains.fail(decision_id, "".join(traceback.format_exception_only(exc)).strip(),
                      timedelta(seconds=settings.retrain.backoff_s), clock())
        raise
    finally:
        _alert(alerter, retrains, decision_id)
        engine.dispose()
    return outcome


def _alert(alerter: Alerter, retrains: RetrainRepository, decision_id: str) -> None:
    """Record how the retrain ended; a store that fails here must not hide the outcome."""
    try:
        decision = retrains.get(decision_id)
        if decision is not None:
            alerter.retrain_outcome(decision)
    except Exception:
        log.exception("could not record the alert for retrain %s", decision_id)


def _retrain(settings: Settings, decision: dict[str, Any], predictions: PredictionRepository,
             reports: ReportRepository, retrains: RetrainRepository,
             clock: Clock) -> RetrainOutcome:
    policy: RetrainSettings = settings.retrain
    experiment_id = tracking.configure_mlflow(settings)
    champion = registry.load_version(decision["model_name"], decision["model_version"])
    card = champion.card
    data = _production_data(settings, predictions, card.labels,
                            reports.first_window_start(decision["report_ids"]))
    weights = representative_weights(data.rows)
    train_idx, held_idx = stratified_split(data.labels, policy.holdout_fraction,
                                           seed=len(data.clips),
                                           min_held=settings.monitor.min_rows,
                                           weights=weights)
    champion_on_recent = predict(champion.loaded.network, card, data.clips).labels
    relabeled = [card.labels[c] for c in relabeled_classes(
        data.labels, champion_on_recent, len(card.labels),
        below=policy.relabeled_accuracy, min_clips=policy.relabeled_min_clips,
        weights=weights)]
    lineage = registry.lineage(champion.run_id)
    original = original_data(settings, lineage, card, relabeled)
    held, held_labels = data.clips[held_idx], data.labels[held_idx]
    challenger = copy_network(champion.loaded, card)  # the champion stays as it was
    with mlflow.start_run(experiment_id=experiment_id) as run:
        retrains.attach_run(decision["id"], run.info.run_id)
        mlflow.set_tags({**_tags(decision, reports, [r.created_at for r in data.rows],
                                 champion.version), **lineage,
                         "vidmon.relabeled_classes": ",".join(relabeled) or "none",
                         "vidmon.format": challenger.format})
        mlflow.log_params({**policy.model_dump(), "production_clips": len(data.clips),
                           "production_train": len(train_idx), "production_held_out":
                           len(held_idx), "original_clips": len(original.train[1]),
                           "original_test_clips": len(original.test[1]),
                           "original_data": original.source})
        repeats = recent_repeats(len(train_idx), len(original.train[1]),
                                 policy.recent_share)
        recent = np.repeat(train_idx, repeats)
        mlflow.log_param("production_train_repeats", repeats)
        mlflow.log_text(_clip_list(data.rows, held_idx), "production_clips.csv")
        trained_on = (np.concatenate([original.train[0], data.clips[recent]]),
                      np.concatenate([original.train[1], data.labels[recent]]))
        result = train_model(
            challenger.network, card, trained_on, (held, held_labels), epochs=policy.epochs,
            learning_rate=policy.learning_rate,
            seed=settings.train.seed,
            on_epoch=lambda m: mlflow.log_metrics(
                {"train_loss": m.train_loss, "val_accuracy_recent": m.val_accuracy},
                step=m.epoch))

        def score(network, clips: np.ndarray, labels: np.ndarray) -> float:  # type: ignore[no-untyped-def]
            return accuracy(predict(network, card, clips).labels, labels) if len(labels) \
                else float("nan")

        verdict = gate(
            score(champion.loaded.network, held, held_labels),
            score(result.model, held, held_labels),
            score(champion.loaded.network, *original.test),
            score(result.model, *original.test),
            policy.gate_margin, policy.gate_tolerance, relabeled=relabeled)
        if verdict.promote and len(held_idx) < settings.monitor.min_rows:
            # The held-out clips become its reference profile: too few, and no report
            # could ever be made on the promoted model.
            verdict = replace(verdict, promote=False, reason=(
                f"{verdict.reason}; but only {len(held_idx)} recent clips were held out for "
                f"its reference profile, the monitor needs {settings.monitor.min_rows} "
                f"(label more, or lower VIDMON_MONITOR__MIN_ROWS)"))
        mlflow.log_metrics({k: v for k, v in asdict(verdict).items()
                            if isinstance(v, float) and not np.isnan(v)})
        mlflow.set_tags({"vidmon.gate.promote": str(verdict.promote),
                         "vidmon.gate.reason": verdict.reason})
        profile = _production_profile(result.model, card, held, held_labels,
                                      settings.train.estimator_clips,
                                      [data.rows[i] for i in held_idx], trained_on,
                                      original.test)
        info = tracking.log_version(challenger, card, profile, settings.model_name)
    version = str(info.registered_model_version)
    client = MlflowClient()
    client.set_registered_model_alias(settings.model_name, registry.CHALLENGER, version)
    client.set_model_version_tag(settings.model_name, version, registry.DECISION_TAG,
                                 decision["id"])
    if verdict.promote:
        registry.promote(client, settings.model_name, version)
    retrains.finish(decision["id"], promoted=verdict.promote, run_id=run.info.run_id,
                    version=version, gate=asdict(verdict), now=clock())
    log.info("retrain %s: challenger v%s %s (%s)", decision["id"], version,
             "promoted" if verdict.promote else "rejected", verdict.reason)
    return RetrainOutcome(decision["id"], run.info.run_id, version, verdict)


def _production_profile(model, card: ModelCard, clips: np.ndarray,  # type: ignore[no-untyped-def]
                        labels: np.ndarray, estimator_clips: int, rows: list[LabeledClip],
                        trained_on: tuple[np.ndarray, np.ndarray],
                        original_test: tuple[np.ndarray, np.ndarray]) -> ReferenceProfile:
    """The challenger's reference: its outputs on the held-out recent clips, with the
    quality features stored when they were served (file size, fps and length included). A
    promoted challenger is then judged against the traffic it was trained for, not against
    the world before the drift. Its accuracy estimators are fitted on the original test
    clips too (relabeled classes left out): a few dozen recent clips alone fit them badly."""
    features = [{k: (np.nan if v is None else float(v)) for k, v in row.features.items()}
                for row in rows]
    return profile_of(model, card, clips, labels, predict(model, card, clips), features,
                      trained_on, original_test, estimator_clips=estimator_clips)


def retrain_command(settings: Settings, decision_id: str | None) -> int:
    """``vidmon retrain``: carry out a decision (by default a new, manual one for the model
    serving now); prints the outcome as JSON."""
    import json

    from monitor.retrain_policy import RetrainDecision
    from training.resources import limit_process

    limit_process(settings.retrain.threads, settings.retrain.nice)
    if decision_id is None:
        engine = create_store_engine(settings.database_url)
        upgrade_database(engine)
        tracking.configure_mlflow(settings)
        name, version = registry.resolve(settings.model_uri)
        decision_id = RetrainRepository(engine).record(
            RetrainDecision(True, ["requested with vidmon retrain"], []), name, version)
        engine.dispose()
    print(json.dumps(asdict(run_retrain(settings, decision_id)), default=str))
    return 0
