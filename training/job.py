"""``vidmon train``: synthetic data -> R(2+1)D -> MLflow run, model version, reference profile."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from monitor.features import VideoMeta, quality_features, quality_features_batch  # noqa: E402
from monitor.profile import ReferenceProfile  # noqa: E402
from monitor.settings import Settings, TrainSettings  # noqa: E402
from monitor.video import InputSize, decode_video  # noqa: E402
from training import registry  # noqa: E402
from training.model import ModelConfig, R2Plus1D  # noqa: E402
from training.synthetic import CLASS_NAMES, ClipSpec, generate_dataset  # noqa: E402
from training.train import confusion_matrix, predict, shuffle_frames, train_model  # noqa: E402
from training.video_io import write_video  # noqa: E402

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingOutcome:
    """What a training run produced."""

    run_id: str
    test_accuracy: float
    per_class_accuracy: dict[str, float]
    model_version: str | None
    became_champion: bool
    train_seconds: float
    total_seconds: float


def model_config_for(train: TrainSettings) -> ModelConfig:
    """Architecture for the configured preset and clip size."""
    size = dict(frames=train.frames, height=train.height, width=train.width,
                label_names=CLASS_NAMES)
    if train.preset == "r2plus1d_18":
        return ModelConfig.r2plus1d_18(len(CLASS_NAMES), **size)
    w = train.width_multiplier
    return ModelConfig(num_classes=len(CLASS_NAMES), stem_width=w,
                       widths=(w, 2 * w, 4 * w, max(128, 4 * w)), **size)


def through_codec(clips: np.ndarray, fps: float, suffix: str) -> tuple[np.ndarray, list[VideoMeta]]:
    """Clips as the service sees them after an upload: encoded to ``suffix``, then decoded
    by the service's own decoder at the same size."""
    size = InputSize(*clips.shape[1:4])
    decoded, metas = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, clip in enumerate(clips):
            path = write_video(clip, Path(tmp) / f"held-out-{i}{suffix}", fps=fps)
            frames, meta, _ = decode_video(path.read_bytes(), size, max_frames=10 * size.frames)
            decoded.append(frames)
            metas.append(meta)
    return np.stack(decoded), metas


def build_reference_profile(
    model: R2Plus1D, clips: np.ndarray, labels: np.ndarray, train: TrainSettings
) -> ReferenceProfile:
    """Reference profile of the held-out clips (outputs, embeddings, quality features),
    after the same container and decoder as uploads when ``reference_format`` is set."""
    if train.reference_format:
        clips, metas = through_codec(clips, train.fps, train.reference_format)
        features = [quality_features(clip, meta) for clip, meta in zip(clips, metas)]
    else:
        meta = VideoMeta(frame_count=train.frames, fps=train.fps, width=train.width,
                         height=train.height)
        features = quality_features_batch(clips, meta)
    outputs = predict(model, clips)
    return ReferenceProfile.build(label_names=CLASS_NAMES, true_labels=labels,
                                  probabilities=outputs.probabilities,
                                  embeddings=outputs.embeddings, features=features)


def _confusion_figure(matrix: np.ndarray) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES, rotation=45, ha="right")
    ax.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center",
                color="white" if count > matrix.max() / 2 else "black")
    fig.tight_layout()
    return fig


def run_training(settings: Settings) -> TrainingOutcome:
    """Generate data, train, evaluate and record everything in MLflow."""
    started = time.perf_counter()
    train = settings.train
    experiment_id = registry.configure_mlflow(settings)
    spec = ClipSpec(train.frames, train.height, train.width)
    log.info("generating %d training and %d held-out clips of %s",
             train.clips_per_class * len(CLASS_NAMES),
             train.test_clips_per_class * len(CLASS_NAMES), spec)
    clips, labels = generate_dataset(train.clips_per_class, train.seed, spec)
    test_clips, test_labels = generate_dataset(train.test_clips_per_class, train.seed + 1, spec)
    if train.shuffle_frames:
        clips = shuffle_frames(clips, train.seed)
        test_clips = shuffle_frames(test_clips, train.seed + 1)
    config = model_config_for(train)
    register = train.register_model and not train.shuffle_frames
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tags({"vidmon.job": "train",
                         "vidmon.control": "shuffled_frames" if train.shuffle_frames else "none"})
        mlflow.log_params({**train.model_dump(), "embedding_dim": config.embedding_dim,
                           "widths": config.widths, "blocks": config.blocks})
        result = train_model(
            config, (clips, labels), (test_clips, test_labels),
            epochs=train.epochs, batch_size=train.batch_size,
            learning_rate=train.learning_rate, seed=train.seed,
            on_epoch=lambda m: mlflow.log_metrics(
                {"train_loss": m.train_loss, "train_accuracy": m.train_accuracy,
                 "val_loss": m.val_loss, "val_accuracy": m.val_accuracy,
                 "epoch_seconds": m.seconds}, step=m.epoch),
        )
        matrix = confusion_matrix(test_labels, result.test_predictions.labels, len(CLASS_NAMES))
        per_class = {name: float(matrix[i, i] / max(matrix[i].sum(), 1))
                     for i, name in enumerate(CLASS_NAMES)}
        test_accuracy = result.final.val_accuracy
        mlflow.log_metrics({"test_accuracy": test_accuracy, "train_seconds": result.seconds,
                            **{f"test_accuracy_{k}": v for k, v in per_class.items()}})
        figure = _confusion_figure(matrix)
        mlflow.log_figure(figure, "confusion_matrix.png")
        plt.close(figure)
        profile = build_reference_profile(result.model, test_clips, test_labels, train)
        mlflow.log_metric("reference_accuracy", profile.accuracy)
        registry.log_reference_profile(profile)
        info = registry.log_model(result.model, train.fps,
                                  settings.model_name if register else None)
        version, champion = None, False
        if register:
            version = str(info.registered_model_version)
            client = MlflowClient()
            client.set_model_version_tag(settings.model_name, version, "vidmon.reference_profile",
                                         f"runs:/{run.info.run_id}/{registry.PROFILE_ARTIFACT}")
            champion = registry.ensure_champion(client, settings.model_name, version)
    outcome = TrainingOutcome(
        run_id=run.info.run_id, test_accuracy=test_accuracy, per_class_accuracy=per_class,
        model_version=version, became_champion=champion, train_seconds=result.seconds,
        total_seconds=time.perf_counter() - started,
    )
    log.info("run %s: held-out accuracy %.4f, model version %s%s, %.0fs in all",
             outcome.run_id, test_accuracy, version or "(not registered)",
             " (champion)" if champion else "", outcome.total_seconds)
    return outcome
