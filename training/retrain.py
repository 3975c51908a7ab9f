"""``vidmon retrain``: a challenger from the champion, judged by the gate, promoted or not.

Runs as its own process (started by the monitor or by hand) so a crash or an out-of-memory
here cannot take monitoring down. The decision row tracks it: running -> promoted |
rejected, or failed (retried by the monitor with backoff).
"""

from __future__ import annotations

import copy
import logging
import traceback
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient

from monitor.clips import ClipStore
from monitor.profile import ReferenceProfile
from monitor.settings import RetrainSettings, Settings
from monitor.store import PredictionRepository, create_store_engine, upgrade_database
from monitor.store.records import LabeledClip
from monitor.store.reports import ReportRepository
from monitor.store.retrains import RetrainRepository
from training import registry
from training.synthetic import ClipSpec, generate_dataset
from training.train import predict, train_model

log = logging.getLogger(__name__)
CHALLENGER = "challenger"


@dataclass(frozen=True)
class GateResult:
    """Champion and challenger on recent and original data, and the verdict."""

    champion_recent: float
    challenger_recent: float
    champion_original: float
    challenger_original: float
    promote: bool
    reason: str


def gate(champion_recent: float, challenger_recent: float, champion_original: float,
         challenger_original: float, margin: float, tolerance: float,
         relabeled: list[str] | None = None) -> GateResult:
    """Promote only when better on recent data by ``margin`` and at most ``tolerance`` worse
    on the original test set. The original test leaves out ``relabeled`` classes (their
    original labels are out of date); with none left (NaN) only the first rule applies."""
    gain = challenger_recent - champion_recent
    loss = champion_original - challenger_original
    kept = np.isnan(loss) or loss <= tolerance
    without = f" (without relabeled {', '.join(relabeled)})" if relabeled else ""
    if gain < margin:
        reason = f"recent accuracy gain {gain:+.3f} is under the margin {margin}"
    elif not kept:
        reason = (f"original test accuracy{without} drops {loss:.3f}, over the tolerance "
                  f"{tolerance}")
    else:
        reason = f"recent accuracy {gain:+.3f}, original test{without} {-loss:+.3f}"
    return GateResult(champion_recent, challenger_recent, champion_original,
                      challenger_original, bool(gain >= margin and kept), reason)


@dataclass(frozen=True)
class RetrainOutcome:
    """What a retrain produced."""

    decision_id: str
    run_id: str
    challenger_version: str
    gate: GateResult


def _accuracy(model, clips: np.ndarray, labels: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    return float((predict(model, clips).labels == labels).mean()) if len(labels) else float("nan")


def relabeled_classes(true: np.ndarray, predicted: np.ndarray, n_classes: int, *,
                      below: float, min_clips: int) -> list[int]:
    """Classes the champion now gets right less often than ``below`` on recent labels (with
    at least ``min_clips`` of them): what they look like now means something else (concept
    drift), so the original data no longer describes them."""
    changed = []
    for c in range(n_classes):
        mask = true == c
        if mask.sum() >= min_clips and (predicted[mask] == c).mean() < below:
            changed.append(c)
    return changed


@dataclass(frozen=True)
class ProductionData:
    """Labeled production clips to learn from, with their stored rows."""

    clips: np.ndarray
    labels: np.ndarray
    rows: list[LabeledClip]


def _drift_began(decision: dict[str, Any], reports: ReportRepository) -> datetime | None:
    """Start of the earliest window that triggered the decision (None: a manual retrain)."""
    starts = [r["window_start"] for r in map(reports.get, decision["report_ids"]) if r]
    return min(starts) if starts else None


def _production_data(settings: Settings, predictions: PredictionRepository,
                     label_names: tuple[str, ...], since: datetime | None) -> ProductionData:
    rows = predictions.labeled_clips(settings.model_name, since=since,
                                     limit=settings.retrain.max_production_clips)
    known = [row for row in rows if row.true_label in label_names]
    if len(known) < 2:
        raise ValueError(f"{len(known)} labeled production clips in the clip store since "
                         f"{since or 'the start'}; need at least 2 to retrain")
    store = ClipStore(settings.clip_dir)
    return ProductionData(np.stack([store.load(row.clip_path) for row in known]),
                          np.array([label_names.index(row.true_label) for row in known],
                                   dtype=np.int64), known)


def stratified_split(labels: np.ndarray, fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out indices, holding out ``fraction`` of every class (at least one
    clip of each class that has two), so the gate and the new reference profile see the
    classes in the proportions production sent them."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        cut = int(round(len(members) * fraction))
        held.extend(members[: max(cut, 1 if len(members) > 1 else 0)])
    if not held:  # a single clip: it can only be held out
        held = [0]
    held_idx = np.sort(np.asarray(held, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels)), held_idx), held_idx


def _without(clips: np.ndarray, labels: np.ndarray, classes: list[int]
             ) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.isin(labels, classes)
    return clips[keep], labels[keep]


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
    try:
        outcome = _retrain(settings, decision, PredictionRepository(engine),
                           ReportRepository(engine), retrains)
    except Exception as exc:
        retrains.fail(decision_id, "".join(traceback.format_exception_only(exc)).strip(),
                      timedelta(seconds=settings.retrain.backoff_s))
        raise
    finally:
        engine.dispose()
    return outcome


def _retrain(settings: Settings, decision: dict[str, Any], predictions: PredictionRepository,
             reports: ReportRepository, retrains: RetrainRepository) -> RetrainOutcome:
    policy: RetrainSettings = settings.retrain
    experiment_id = registry.configure_mlflow(settings)
    champion = registry.load_model(f"models:/{settings.model_name}@{registry.CHAMPION}")
    config = champion.config
    data = _production_data(settings, predictions, config.label_names,
                            _drift_began(decision, reports))
    train_idx, held_idx = stratified_split(data.labels, policy.holdout_fraction,
                                           seed=len(data.clips))
    relabeled = relabeled_classes(
        data.labels, predict(champion.model, data.clips).labels, config.num_classes,
        below=policy.relabeled_accuracy, min_clips=policy.relabeled_min_clips)
    spec = ClipSpec(config.frames, config.height, config.width)
    original = _without(*generate_dataset(policy.original_clips_per_class, settings.train.seed,
                                          spec), relabeled)
    test, test_labels = _without(*generate_dataset(settings.train.test_clips_per_class,
                                                   settings.train.seed + 1, spec), relabeled)
    held, held_labels = data.clips[held_idx], data.labels[held_idx]
    names = [config.label_names[c] for c in relabeled]
    with mlflow.start_run(experiment_id=experiment_id) as run:
        retrains.attach_run(decision["id"], run.info.run_id)
        mlflow.set_tags({**_tags(decision, reports, [r.created_at for r in data.rows],
                                 str(champion.version)),
                         "vidmon.relabeled_classes": ",".join(names) or "none"})
        mlflow.log_params({**policy.model_dump(), "production_clips": len(data.clips),
                           "production_train": len(train_idx), "production_held_out":
                           len(held_idx), "original_clips": len(original[0])})
        result = train_model(
            config, (np.concatenate([original[0], data.clips[train_idx]]),
                     np.concatenate([original[1], data.labels[train_idx]])),
            (held, held_labels), epochs=policy.epochs, learning_rate=policy.learning_rate,
            seed=settings.train.seed,
            init_model=copy.deepcopy(champion.model),  # the champion stays as it was, for the gate
            on_epoch=lambda m: mlflow.log_metrics(
                {"train_loss": m.train_loss, "val_accuracy_recent": m.val_accuracy},
                step=m.epoch))
        verdict = gate(
            _accuracy(champion.model, held, held_labels),
            _accuracy(result.model, held, held_labels),
            _accuracy(champion.model, test, test_labels),
            _accuracy(result.model, test, test_labels),
            policy.gate_margin, policy.gate_tolerance, relabeled=names)
        mlflow.log_metrics({k: v for k, v in asdict(verdict).items()
                            if isinstance(v, float) and not np.isnan(v)})
        mlflow.set_tags({"vidmon.gate.promote": str(verdict.promote),
                         "vidmon.gate.reason": verdict.reason})
        registry.log_reference_profile(_production_profile(
            result.model, held, held_labels, [data.rows[i] for i in held_idx],
            config.label_names))
        info = registry.log_model(result.model, settings.train.fps, settings.model_name)
    version = str(info.registered_model_version)
    client = MlflowClient()
    client.set_registered_model_alias(settings.model_name, CHALLENGER, version)
    client.set_model_version_tag(settings.model_name, version, "vidmon.decision_id",
                                 decision["id"])
    if verdict.promote:
        registry.promote(client, settings.model_name, version)
    retrains.finish(decision["id"], promoted=verdict.promote, run_id=run.info.run_id,
                    version=version, gate=asdict(verdict))
    log.info("retrain %s: challenger v%s %s (%s)", decision["id"], version,
             "promoted" if verdict.promote else "rejected", verdict.reason)
    return RetrainOutcome(decision["id"], run.info.run_id, version, verdict)


def _production_profile(model, clips: np.ndarray, labels: np.ndarray,  # type: ignore[no-untyped-def]
                        rows: list[LabeledClip], label_names: tuple[str, ...]
                        ) -> ReferenceProfile:
    """The challenger's reference: its outputs on the held-out recent clips, with the
    quality features stored when they were served (file size, fps and length included). A
    promoted challenger is then judged against the traffic it was trained for, not against
    the world before the drift."""
    outputs = predict(model, clips)
    features = [{k: (np.nan if v is None else float(v)) for k, v in row.features.items()}
                for row in rows]
    return ReferenceProfile.build(label_names=label_names, true_labels=labels,
                                  probabilities=outputs.probabilities,
                                  embeddings=outputs.embeddings, features=features)
