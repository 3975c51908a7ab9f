"""``vidmon train``: a dataset of video files -> R(2+1)D -> MLflow run, model version,
reference profile.

The data is any :class:`~training.datasets.VideoDataset` (``--data``); without one, the
synthetic generator writes a dataset of encoded videos first, and training reads it through
the same path. The run records the dataset (``mlflow.log_input``, class counts, split sizes,
a lineage tag), so retraining finds it again.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from monitor.card import KINETICS_MEAN, KINETICS_STD, ModelCard, load_card  # noqa: E402
from monitor.settings import Settings, TrainSettings  # noqa: E402
from training import registry, tracking  # noqa: E402
from training.datasets import (  # noqa: E402
    DatasetError,
    load_clips,
    open_dataset,
    require_usable,
)
from training.model import ModelConfig  # noqa: E402
from training.modelfile import vidmon_network  # noqa: E402
from training.profiling import profile_clips  # noqa: E402
from training.synthetic import ClipSpec, write_dataset  # noqa: E402
from training.train import confusion_matrix, shuffle_frames, train_model  # noqa: E402

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
    data: str
    skipped_files: int


def model_config_for(train: TrainSettings, num_classes: int) -> ModelConfig:
    """Architecture for the configured preset."""
    if train.preset == "r2plus1d_18":
        return ModelConfig.r2plus1d_18(num_classes)
    w = train.width_multiplier
    return ModelConfig(num_classes=num_classes, stem_width=w,
                       widths=(w, 2 * w, 4 * w, max(128, 4 * w)))


def synthetic_data(train: TrainSettings) -> Path:
    """The synthetic dataset for these settings, written once (its manifest's path)."""
    name = (f"{train.clips_per_class}+{train.test_clips_per_class}-per-class-"
            f"{train.frames}x{train.height}x{train.width}-seed{train.seed}"
            f"{train.video_format.replace('.', '-')}")
    manifest = train.synthetic_dir / name / "manifest.csv"
    if not _complete(manifest):
        log.info("writing a synthetic dataset to %s", manifest.parent)
        write_dataset(manifest.parent, train.clips_per_class, train.test_clips_per_class,
                      spec=ClipSpec(train.frames, train.height, train.width), fps=train.fps,
                      seed=train.seed, suffix=train.video_format)
    return manifest


def _complete(manifest: Path) -> bool:
    """Whether a dataset written earlier is still whole (its manifest and every file)."""
    if not manifest.is_file():
        return False
    with manifest.open(newline="") as handle:
        return all((manifest.parent / row["path"]).is_file() for row in csv.DictReader(handle))


def training_card(train: TrainSettings, labels: tuple[str, ...]) -> ModelCard:
    """The card of the model to train: from ``train.card`` (labels from the data unless it
    lists them), or stretch + uniform sampling at the configured size, Kinetics mean/std."""
    if train.card is None:
        return ModelCard(labels=labels, frames=train.frames, height=train.height,
                         width=train.width, mean=KINETICS_MEAN, std=KINETICS_STD,
                         name="vidmon R(2+1)D")
    card = load_card(train.card, labels=labels)
    missing = sorted(set(labels) - set(card.labels))
    if missing:
        raise DatasetError(f"the data has labels {missing} that the card {train.card} lacks")
    return card


def _confusion_figure(matrix: np.ndarray, labels: tuple[str, ...]) -> plt.Figure:
    size = min(4 + 0.4 * len(labels), 30)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    ax.imshow(matrix, cmap="Blues")
    if len(labels) <= 40:
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center",
                    color="white" if count > matrix.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    return fig


def run_training(settings: Settings) -> TrainingOutcome:
    """Read the dataset, train, evaluate and record everything in MLflow."""
    started = time.perf_counter()
    train = settings.train
    source = train.data or synthetic_data(train)
    dataset = open_dataset(source, settings.objects, seed=train.seed,
                           test_fraction=train.test_fraction)
    card = training_card(train, dataset.labels)
    max_frames, max_clips = settings.serve.max_video_frames, settings.serve.max_clips_per_video
    train_part = load_clips(dataset.split("train"), card, max_frames=max_frames,
                            max_clips=max_clips, description="decoding training videos")
    if not dataset.split("held_out"):
        raise DatasetError(f"{dataset.source} has no test or val split to evaluate on")
    test_part = load_clips(dataset.split("held_out"), card, max_frames=max_frames,
                           max_clips=max_clips, description="decoding held-out videos")
    require_usable(dataset, train_part, test_part)
    clips, test_clips = train_part.clips, test_part.clips
    if train.shuffle_frames:
        clips = shuffle_frames(clips, train.seed)
        test_clips = shuffle_frames(test_clips, train.seed + 1)
    experiment_id = tracking.configure_mlflow(settings)
    config = model_config_for(train, len(card.labels))
    torch.manual_seed(train.seed)
    loaded = vidmon_network(config)
    register = train.register_model and not train.shuffle_frames
    skipped = len(train_part.skipped) + len(test_part.skipped)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tags({"vidmon.job": "train", "vidmon.skipped_files": str(skipped),
                         "vidmon.control": "shuffled_frames" if train.shuffle_frames else "none"})
        mlflow.log_params({**train.model_dump(exclude={"data", "card"}),
                           "embedding_dim": config.embedding_dim, "widths": config.widths,
                           "blocks": config.blocks})
        tracking.log_dataset(dataset, "training")
        result = train_model(
            loaded.network, card, (clips, train_part.labels), (test_clips, test_part.labels),
            epochs=train.epochs, batch_size=train.batch_size,
            learning_rate=train.learning_rate, seed=train.seed,
            on_epoch=lambda m: mlflow.log_metrics(
                {"train_loss": m.train_loss, "train_accuracy": m.train_accuracy,
                 "val_loss": m.val_loss, "val_accuracy": m.val_accuracy,
                 "epoch_seconds": m.seconds}, step=m.epoch),
        )
        matrix = confusion_matrix(test_part.labels, result.test_predictions.labels,
                                  len(card.labels))
        per_class = {name: float(matrix[i, i] / max(matrix[i].sum(), 1))
                     for i, name in enumerate(card.labels)}
        test_accuracy = result.final.val_accuracy
        mlflow.log_metrics({"test_accuracy": test_accuracy, "train_seconds": result.seconds,
                            **{f"test_accuracy_{k}": v for k, v in per_class.items()}})
        figure = _confusion_figure(matrix, card.labels)
        mlflow.log_figure(figure, "confusion_matrix.png")
        plt.close(figure)
        profile = profile_clips(result.model, card, test_part, result.test_predictions,
                                head_clips=(clips, train_part.labels),
                                estimator_clips=settings.train.estimator_clips)
        info = tracking.log_version(loaded, card, profile,
                                    settings.model_name if register else None, "trained")
        version, champion = None, False
        if register:
            version = str(info.registered_model_version)
            champion = registry.ensure_champion(MlflowClient(), settings.model_name, version)
    outcome = TrainingOutcome(
        run_id=run.info.run_id, test_accuracy=test_accuracy, per_class_accuracy=per_class,
        model_version=version, became_champion=champion, train_seconds=result.seconds,
        total_seconds=time.perf_counter() - started, data=str(dataset.source),
        skipped_files=skipped)
    log.info("run %s: held-out accuracy %.4f, model version %s%s, %.0fs in all",
             outcome.run_id, test_accuracy, version or "(not registered)",
             " (champion)" if champion else "", outcome.total_seconds)
    return outcome


def train_command(settings: Settings) -> int:
    """``vidmon train``: train, then print the outcome as JSON."""
    print(json.dumps(asdict(run_training(settings)), indent=2))
    return 0
