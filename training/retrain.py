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
from datetime import timedelta
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient

from monitor.clips import ClipStore
from monitor.features import quality_features_batch
from monitor.profile import ReferenceProfile
from monitor.settings import RetrainSettings, Settings
from monitor.store import PredictionRepository, create_store_engine, upgrade_database
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
         challenger_original: float, margin: float, tolerance: float) -> GateResult:
    """Promote only when better on recent data by ``margin`` and at most ``tolerance`` worse
    on the original test set."""
    gain = challenger_recent - champion_recent
    loss = champion_original - challenger_original
    if gain < margin:
        reason = f"recent accuracy gain {gain:+.3f} is under the margin {margin}"
    elif loss > tolerance:
        reason = f"original test accuracy drops {loss:.3f}, over the tolerance {tolerance}"
    else:
        reason = f"recent accuracy {gain:+.3f}, original test {-loss:+.3f}"
    return GateResult(champion_recent, challenger_recent, champion_original,
                      challenger_original, gain >= margin and loss <= tolerance, reason)


@dataclass(frozen=True)
class RetrainOutcome:
    """What a retrain produced."""

    decision_id: str
    run_id: str
    challenger_version: str
    gate: GateResult


def _accuracy(model, clips: np.ndarray, labels: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    return float((predict(model, clips).labels == labels).mean()) if len(labels) else float("nan")


def _production_data(settings: Settings, predictions: PredictionRepository,
                     label_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, list]:
    rows = predictions.labeled_clips(settings.model_name, limit=settings.retrain.max_production_clips)
    store = ClipStore(settings.clip_dir)
    known = [(path, label, at) for path, label, at in rows if label in label_names]
    clips = np.stack([store.load(path) for path, _, _ in known]) if known else None
    labels = np.array([label_names.index(label) for _, label, _ in known], dtype=np.int64)
    return clips, labels, [at for _, _, at in known]


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out indices; the held-out part is ``fraction`` of ``n``."""
    order = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(round(n * fraction)))
    return np.sort(order[cut:]), np.sort(order[:cut])


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
    clips, labels, times = _production_data(settings, predictions, config.label_names)
    if clips is None or len(clips) < 2:
        raise ValueError("no labeled production clips in the clip store to retrain on")
    train_idx, held_idx = _split(len(clips), policy.holdout_fraction, seed=len(clips))
    spec = ClipSpec(config.frames, config.height, config.width)
    original, original_labels = generate_dataset(policy.original_clips_per_class,
                                                 settings.train.seed, spec)
    test, test_labels = generate_dataset(settings.train.test_clips_per_class,
                                         settings.train.seed + 1, spec)
    train_clips = np.concatenate([original, clips[train_idx]])
    train_labels = np.concatenate([original_labels, labels[train_idx]])
    with mlflow.start_run(experiment_id=experiment_id) as run:
        retrains.attach_run(decision["id"], run.info.run_id)
        mlflow.set_tags(_tags(decision, reports, times, str(champion.version)))
        mlflow.log_params({**policy.model_dump(), "production_clips": len(clips),
                           "production_train": len(train_idx), "production_held_out":
                           len(held_idx), "original_clips": len(original)})
        result = train_model(
            config, (train_clips, train_labels), (clips[held_idx], labels[held_idx]),
            epochs=policy.epochs, learning_rate=policy.learning_rate, seed=settings.train.seed,
            init_model=copy.deepcopy(champion.model),  # the champion stays as it was, for the gate
            on_epoch=lambda m: mlflow.log_metrics(
                {"train_loss": m.train_loss, "val_accuracy_recent": m.val_accuracy},
                step=m.epoch))
        verdict = gate(
            _accuracy(champion.model, clips[held_idx], labels[held_idx]),
            _accuracy(result.model, clips[held_idx], labels[held_idx]),
            _accuracy(champion.model, test, test_labels),
            _accuracy(result.model, test, test_labels),
            policy.gate_margin, policy.gate_tolerance)
        mlflow.log_metrics({k: v for k, v in asdict(verdict).items()
                            if isinstance(v, float)})
        mlflow.set_tags({"vidmon.gate.promote": str(verdict.promote),
                         "vidmon.gate.reason": verdict.reason})
        profile_clips = np.concatenate([clips[held_idx], test])
        profile_labels = np.concatenate([labels[held_idx], test_labels])
        outputs = predict(result.model, profile_clips)
        registry.log_reference_profile(ReferenceProfile.build(
            label_names=config.label_names, true_labels=profile_labels,
            probabilities=outputs.probabilities, embeddings=outputs.embeddings,
            features=quality_features_batch(profile_clips)))
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
