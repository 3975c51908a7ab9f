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
from monitor.objects.clips import ClipStore
from monitor.profile import ReferenceProfile
from monitor.settings import RetrainSettings, Settings
from monitor.store import PredictionRepository, create_store_engine, upgrade_database
from monitor.store.alerts import AlertRepository
from monitor.store.records import LabeledClip
from monitor.store.reports import ReportRepository
from monitor.store.retrains import RetrainRepository
from training import registry, tracking
from training.datasets import VideoItem, load_clips, open_listing
from training.gate import GateResult, PairedDifference, gate, paired_difference, relabeled_classes
from training.modelfile import copy_network
from training.profiling import profile_of
from training.progress import counted
from training.resources import default_threads
from training.tracking import REFERENCE_DATA_TAG, TRAIN_DATA_TAG
from training.train import predict, train_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainOutcome:
    """What a retrain produced: ``promoted``, ``rejected`` by the gate, or ``cancelled``
    because the champion it was decided for is no longer the champion."""

    decision_id: str
    status: str
    run_id: str | None = None
    challenger_version: str | None = None
    gate: GateResult | None = None
    reason: str = ""


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
    store = ClipStore.of(settings)
    clips, known = [], []
    for row in counted(rows, "loading labeled production clips", "clip"):
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
                     weights: np.ndarray | None = None, videos: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out clip indices, split by video: every clip of a video lands on
    the same side (``videos``, each clip its own video when None), so the gate never
    scores a model on a video it trained on. ``fraction`` of every class's videos is held
    out (at least one video of each class that has two), so the gate and the new
    reference profile see the classes in the proportions production sent them; then
    topped up at random to ``min_held`` clips while at least half stay for training. With
    ``weights`` (see :func:`representative_weights`), a class's share of the held-out
    part is its share of the weight, and a video is held out with a chance that grows
    with its clips' mean weight."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keys = np.arange(len(labels)) if videos is None else np.asarray(videos, dtype=object)
    _, group = np.unique(keys.astype(str), return_inverse=True)
    count = int(group.max()) + 1 if len(labels) else 0
    size = np.bincount(group, minlength=count)
    # A video's class is the label most of its clips carry.
    video_label = np.array([np.bincount(labels[group == g]).argmax() for g in range(count)]) \
        if count else np.zeros(0, dtype=np.int64)
    video_weight = None if weights is None else \
        np.bincount(group, weights=weights, minlength=count) / size

    def pick(candidates: np.ndarray, k: int) -> np.ndarray:
        if video_weight is None:
            return rng.permutation(candidates)[:k]
        w = video_weight[candidates]
        return rng.choice(candidates, size=k, replace=False, p=w / w.sum())

    held: list[int] = []
    for c in np.unique(video_label):
        members = np.flatnonzero(video_label == c)
        share = len(members) / count if video_weight is None else \
            video_weight[members].sum() / video_weight.sum()
        cut = int(round(count * fraction * share))
        cut = min(max(cut, 1 if len(members) > 1 else 0), max(len(members) - 1, 1))
        held.extend(pick(members, cut))
    if not held and count:  # a single video: it can only be held out
        held = [0]
    rest = np.setdiff1d(np.arange(count), held)
    for video in (pick(rest, len(rest)) if len(rest) else []):
        held_clips = size[held].sum()
        if held_clips >= min_held:
            break
        if held_clips + size[video] <= len(labels) // 2:
            held.append(int(video))
    held_video = np.zeros(count, dtype=bool)
    held_video[np.asarray(held, dtype=np.int64)] = True
    held_idx = np.flatnonzero(held_video[group]) if count else np.zeros(0, np.int64)
    return np.flatnonzero(~held_video[group]) if count else held_idx, held_idx


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
class LabeledSet:
    """Labeled clips with each clip's video (clips of one video share it)."""

    clips: np.ndarray
    labels: np.ndarray
    videos: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> "LabeledSet":
        """The clips at ``index``."""
        return LabeledSet(self.clips[index], self.labels[index], self.videos[index])


@dataclass(frozen=True)
class OriginalData:
    """The champion's original data: a training sample and the gate's original test."""

    train: LabeledSet
    test: LabeledSet
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
    split exactly as when it was recorded and cut into clips as serving cuts them;
    classes in ``relabeled`` are left out (their original labels are out of date)."""
    empty = LabeledSet(np.zeros((0, *card.clip_shape), np.uint8), np.zeros(0, np.int64),
                       np.zeros(0, dtype=object))
    context = "training" if TRAIN_DATA_TAG in lineage else "reference"
    listing = tracking.dataset_files(lineage, context)
    if listing is None:
        log.warning("the champion records no dataset; retraining on production clips alone")
        return OriginalData(empty, empty, "none")
    tag = TRAIN_DATA_TAG if context == "training" else REFERENCE_DATA_TAG
    dataset = open_listing(listing, lineage[tag], settings.objects)
    if dataset.digest != lineage.get(f"{tag}.digest"):
        log.warning("the files of %s changed since the champion used them", lineage[tag])

    def load(items: list[VideoItem], what: str) -> LabeledSet:
        items = [i for i in items if i.label not in relabeled]
        if not items:
            return empty
        part = load_clips(items, card, max_frames=settings.serve.max_video_frames,
                          max_clips=settings.serve.max_clips_per_video, description=what)
        return LabeledSet(part.clips, part.labels, part.videos)

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


def champion_moved(model_name: str, decided_for: str) -> str | None:
    """Why a retrain decided for version ``decided_for`` no longer applies (the champion
    is another version now), or None while it is still the champion. A registry that
    cannot answer raises: the retrain fails and is retried, never cancelled on a guess."""
    current = registry.resolve(f"models:/{model_name}@{registry.CHAMPION}")[1]
    if current == str(decided_for):
        return None
    return (f"the champion is v{current} now, not v{decided_for} that this retrain was "
            f"decided for: its data and gate belong to another model (a new decision "
            f"follows the champion's own reports)")


def run_retrain(settings: Settings, decision_id: str) -> RetrainOutcome:
    """Train, evaluate, register and gate a challenger for a triggered decision; cancel it
    when the champion it was decided for has been replaced meanwhile."""
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
        tracking.configure_mlflow(settings)
        if decision["mlflow_run_id"] and tracking.end_abandoned_run(
                decision["mlflow_run_id"], f"attempt {decision['attempts']} of retrain "
                f"{decision_id} took over"):
            log.info("retrain %s: the run of an earlier attempt, %s, is marked killed",
                     decision_id, decision["mlflow_run_id"])
        moved = champion_moved(decision["model_name"], decision["model_version"])
        if moved is not None:
            retrains.cancel(decision_id, moved, clock())
            log.info("retrain %s cancelled: %s", decision_id, moved)
            return RetrainOutcome(decision_id, "cancelled", reason=moved)
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


def _relabeled(settings: Settings, champion: registry.VersionModel, data: ProductionData,
               predicted: np.ndarray, weights: np.ndarray | None) -> list[str]:
    """Classes the champion now gets significantly worse than on its own reference."""
    policy = settings.retrain
    right, clips = tracking.load_reference_profile(champion.run_id).class_accuracy()
    return [champion.card.labels[c] for c in relabeled_classes(
        data.labels, predicted, len(champion.card.labels), reference_right=right,
        reference_clips=clips, min_clips=policy.relabeled_min_clips,
        ratio=policy.relabeled_ratio, alpha=policy.relabeled_alpha, weights=weights)]


def _gate_metrics(verdict: GateResult) -> dict[str, float]:
    """The gate's numbers as MLflow metrics (NaN ones left out)."""
    metrics: dict[str, float] = {k: v for k, v in asdict(verdict).items()
                                 if isinstance(v, float)}
    for name, part in (("recent", verdict.recent), ("original", verdict.original)):
        if part is not None:
            metrics.update({f"gate_{name}_{k}": float(v) for k, v in asdict(part).items()})
    return {k: v for k, v in metrics.items() if not np.isnan(v)}


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
    recent_all = LabeledSet(data.clips, data.labels,
                            np.array([r.video for r in data.rows], dtype=object))
    train_idx, held_idx = stratified_split(data.labels, policy.holdout_fraction,
                                           seed=len(data.clips),
                                           min_held=settings.monitor.min_rows,
                                           weights=weights, videos=recent_all.videos)
    champion_on_recent = predict(champion.loaded.network, card, data.clips).labels
    relabeled = _relabeled(settings, champion, data, champion_on_recent, weights)
    lineage = registry.lineage(champion.run_id)
    original = original_data(settings, lineage, card, relabeled)
    held = recent_all.take(held_idx)
    challenger = copy_network(champion.loaded, card)  # the champion stays as it was
    with mlflow.start_run(experiment_id=experiment_id) as run:
        retrains.attach_run(decision["id"], run.info.run_id)
        mlflow.set_tags({**_tags(decision, reports, [r.created_at for r in data.rows],
                                 champion.version), **lineage,
                         "vidmon.relabeled_classes": ",".join(relabeled) or "none",
                         "vidmon.format": challenger.format})
        mlflow.log_params({**policy.model_dump(), "production_clips": len(data.clips),
                           "production_videos": len(set(recent_all.videos.tolist())),
                           "production_train": len(train_idx), "production_held_out":
                           len(held_idx), "original_clips": len(original.train),
                           "original_test_clips": len(original.test),
                           "original_data": original.source})
        repeats = recent_repeats(len(train_idx), len(original.train), policy.recent_share)
        recent = np.repeat(train_idx, repeats)
        mlflow.log_param("production_train_repeats", repeats)
        mlflow.log_text(_clip_list(data.rows, held_idx), "production_clips.csv")
        trained_on = (np.concatenate([original.train.clips, data.clips[recent]]),
                      np.concatenate([original.train.labels, data.labels[recent]]))
        result = train_model(
            challenger.network, card, trained_on, (held.clips, held.labels),
            epochs=policy.epochs, learning_rate=policy.learning_rate,
            seed=settings.train.seed,
            threads=settings.retrain.threads or default_threads(),
            on_epoch=lambda m: mlflow.log_metrics(
                {"train_loss": m.train_loss, "val_accuracy_recent": m.val_accuracy},
                step=m.epoch))

        def compare(part: LabeledSet, seed: int) -> PairedDifference:
            if not len(part):
                return paired_difference(np.zeros(0, bool), np.zeros(0, bool))
            return paired_difference(
                predict(champion.loaded.network, card, part.clips).labels == part.labels,
                predict(result.model, card, part.clips).labels == part.labels,
                part.videos, seed=seed)

        verdict = gate(compare(held, 1), compare(original.test, 2), policy.gate_margin,
                       policy.gate_tolerance, relabeled=relabeled)
        if verdict.promote and len(held_idx) < settings.monitor.min_rows:
            # The held-out clips become its reference profile: too few, and no report
            # could ever be made on the promoted model.
            verdict = replace(verdict, promote=False, reason=(
                f"{verdict.reason}; but only {len(held_idx)} recent clips were held out for "
                f"its reference profile, the monitor needs {settings.monitor.min_rows} "
                f"(label more, or lower VIDMON_MONITOR__MIN_ROWS)"))
        mlflow.log_metrics(_gate_metrics(verdict))
        mlflow.set_tags({"vidmon.gate.promote": str(verdict.promote),
                         "vidmon.gate.reason": verdict.reason[:5000]})
        profile = _production_profile(result.model, card, held,
                                      settings.train.estimator_clips,
                                      [data.rows[i] for i in held_idx], trained_on,
                                      original.test)
        info = tracking.log_version(challenger, card, profile, settings.model_name,
                                    "retrained")
    version = str(info.registered_model_version)
    client = MlflowClient()
    client.set_model_version_tag(settings.model_name, version, registry.DECISION_TAG,
                                 decision["id"])
    status, reason = ("promoted" if verdict.promote else "rejected"), verdict.reason
    moved = champion_moved(settings.model_name, decision["model_version"])
    if moved is not None:  # replaced while this one trained: never promote over it
        status, reason = "cancelled", moved
    else:
        client.set_registered_model_alias(settings.model_name, registry.CHALLENGER, version)
        if verdict.promote:
            registry.promote(client, settings.model_name, version)
    retrains.finish(decision["id"], status=status, run_id=run.info.run_id, version=version,
                    gate=asdict(verdict), now=clock(),
                    error=reason if status == "cancelled" else None)
    log.info("retrain %s: challenger v%s %s (%s)", decision["id"], version, status, reason)
    return RetrainOutcome(decision["id"], status, run.info.run_id, version, verdict, reason)


def _production_profile(model, card: ModelCard, held: LabeledSet,  # type: ignore[no-untyped-def]
                        estimator_clips: int, rows: list[LabeledClip],
                        trained_on: tuple[np.ndarray, np.ndarray],
                        original_test: LabeledSet) -> ReferenceProfile:
    """The challenger's reference: its outputs on the held-out recent clips, with the
    quality features stored when they were served (file size, fps and length included). A
    promoted challenger is then judged against the traffic it was trained for, not against
    the world before the drift. Its accuracy estimators are fitted on the original test
    clips too (relabeled classes left out): a few dozen recent clips alone fit them badly."""
    features = [{k: (np.nan if v is None else float(v)) for k, v in row.features.items()}
                for row in rows]
    return profile_of(model, card, held.clips, held.labels, predict(model, card, held.clips),
                      features, trained_on,
                      (original_test.clips, original_test.labels, original_test.videos),
                      estimator_clips=estimator_clips, videos=held.videos)


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
