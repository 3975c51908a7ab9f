"""Training and evaluation of a video classifier in the vidmon contract (torch and numpy only).

Any network whose forward maps the card's normalised input to ``(logits, embedding)`` trains
and evaluates here: vidmon's R(2+1)D from scratch, or a registered model fine-tuned through
its own format's module (see :mod:`training.modelfile`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from torch import nn

from monitor.card import ModelCard
from monitor.cpu_share import CoreShare, ThreadBudget
from monitor.preprocess import to_model_input
from monitor.runtime import autocast_for, best_device
from training.modelfile import move_network
from training.progress import counted

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochMetrics:
    """Loss and accuracy of one epoch on the training and held-out sets."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float


@dataclass(frozen=True)
class Predictions:
    """Model outputs for a set of clips."""

    logits: np.ndarray
    embeddings: np.ndarray

    @property
    def probabilities(self) -> np.ndarray:
        """Softmax of the logits."""
        shifted = self.logits - self.logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)

    @property
    def labels(self) -> np.ndarray:
        """Predicted class indices."""
        return self.logits.argmax(axis=1)


@dataclass(frozen=True)
class TrainResult:
    """A trained model with its history and held-out predictions."""

    model: nn.Module
    history: list[EpochMetrics]
    test_predictions: Predictions
    seconds: float

    @property
    def final(self) -> EpochMetrics:
        """Metrics of the last epoch."""
        return self.history[-1]


def shuffle_frames(clips: np.ndarray, seed: int) -> np.ndarray:
    """Control input: every clip with its frames in a random order (same frames, no motion)."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(clips)
    for i, clip in enumerate(clips):
        out[i] = clip[rng.permutation(len(clip))]
    return out


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _inputs(clips: np.ndarray, card: ModelCard, device: torch.device) -> torch.Tensor:
    return to_model_input(torch.from_numpy(np.ascontiguousarray(clips)).to(device), card)


@torch.no_grad()
def predict(
    model: nn.Module, card: ModelCard, clips: np.ndarray, batch_size: int = 64,
    device: torch.device | None = None,
) -> Predictions:
    """Logits and embeddings of uint8 clips (N, T, H, W, 3), in eval mode."""
    device = device or _device_of(model)
    model.eval()
    logits, embeddings = [], []
    for start in range(0, len(clips), batch_size):
        batch = _inputs(clips[start : start + batch_size], card, device)
        with autocast_for(device):
            out, emb = model(batch)
        logits.append(out.float().cpu().numpy())
        embeddings.append(emb.float().cpu().numpy())
    return Predictions(np.concatenate(logits), np.concatenate(embeddings))


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item())


def train_model(
    model: nn.Module,
    card: ModelCard,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    seed: int = 0,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    device: torch.device | None = None,
    threads: int | None = None,
) -> TrainResult:
    """Train ``model`` in place with AdamW and a one-cycle schedule; evaluate on ``test``
    after every epoch. A fresh network trains from scratch, a loaded one is fine-tuned.
    On the CPU each step computes on the cores other processes leave (at most
    ``threads``): with torch's two threads on a busy 2-core machine an epoch took 499 s,
    with one 82 s, since every operator waits for its slowest thread."""
    clips, labels = train
    test_clips, test_labels = test
    if len(clips) == 0 or len(test_clips) == 0:
        raise ValueError("training and test sets must not be empty")
    device = device or best_device()
    torch.manual_seed(seed)
    model = move_network(model, device)
    steps_per_epoch = (len(clips) + batch_size - 1) // batch_size
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=learning_rate, total_steps=epochs * steps_per_epoch, pct_start=0.2
    )
    rng = np.random.default_rng(seed)
    budget = ThreadBudget(CoreShare(), most=threads) if device.type == "cpu" else None
    history: list[EpochMetrics] = []
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        order = rng.permutation(len(clips))
        loss_sum, correct = 0.0, 0
        for start in counted(range(0, len(clips), batch_size), f"epoch {epoch}/{epochs}",
                             "batch", every_s=30.0):
            if budget is not None:
                budget()
            idx = np.sort(order[start : start + batch_size])
            x = _inputs(clips[idx], card, device)
            y = torch.from_numpy(labels[idx]).to(device)
            with autocast_for(device):
                logits, _ = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=0.05)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum().item())
        held_out = predict(model, card, test_clips, device=device)
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=loss_sum / len(clips),
            train_accuracy=correct / len(clips),
            val_loss=_cross_entropy(held_out.logits, test_labels),
            val_accuracy=float((held_out.labels == test_labels).mean()),
            seconds=time.perf_counter() - epoch_start,
        )
        history.append(metrics)
        log.info("epoch %d/%d: train loss %.3f acc %.3f | held-out loss %.3f acc %.3f (%.0fs)",
                 epoch, epochs, metrics.train_loss, metrics.train_accuracy, metrics.val_loss,
                 metrics.val_accuracy, metrics.seconds)
        if on_epoch:
            on_epoch(metrics)
    model.eval()
    return TrainResult(model, history, held_out, time.perf_counter() - started)


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts (n_classes, n_classes), rows are true classes."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)
    return matrix
