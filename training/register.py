"""``vidmon register``: bring your own model.

An existing PyTorch video classifier (TorchScript, a ``torch.export`` program, or an
R(2+1)D state_dict in vidmon's or torchvision's layout) and its card are checked against
each other, profiled on labeled reference videos through the service's own decoder, and
registered in MLflow with that reference profile (``champion`` when there is none yet).
Nothing is registered when anything is wrong.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from monitor.card import load_card
from monitor.settings import Settings
from training import registry, tracking
from training.datasets import load_clips, open_dataset, require_usable
from training.modelfile import check_against_card, load_network
from training.profiling import profile_clips

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisterOutcome:
    """What a registration produced."""

    model_version: str
    became_champion: bool
    format: str
    run_id: str
    reference_rows: int
    reference_accuracy: float
    per_class_accuracy: dict[str, float]
    chance_accuracy: float
    warnings: list[str]
    skipped_files: int
    seconds: float


NEAR_CHANCE = 1.5  # reference accuracy under this many times chance: the card is suspect


def reference_warnings(accuracy: float, per_class: dict[str, float], clips: dict[str, int],
                       chance: float) -> list[str]:
    """What a person registering a model should hear about its reference accuracy: near
    chance overall (a card with the wrong clip size, resize or normalisation still loads
    when the network pools adaptively), or classes it never gets right."""
    warnings = []
    if accuracy < NEAR_CHANCE * chance:
        warnings.append(
            f"reference accuracy {accuracy:.3f} is near chance ({chance:.3f} for "
            f"{len(per_class)} classes): check the card's frames, size, resize, sampling, "
            "mean and std against how the model was trained, and its labels' order")
    never = [c for c, a in per_class.items() if clips.get(c) and a == 0.0]
    if never and accuracy >= NEAR_CHANCE * chance:
        warnings.append(f"the model gets no reference clip of {', '.join(never)} right")
    return warnings


def register_model(settings: Settings, model_file: Path, card_file: Path,
                   reference_data: str | Path) -> RegisterOutcome:
    """Check, profile and register a model file with its card."""
    started = time.perf_counter()
    card = load_card(card_file)
    loaded = load_network(model_file, card)
    check_against_card(loaded, card)
    dataset = open_dataset(reference_data, settings.objects)
    part = load_clips(list(dataset.items), card, max_frames=settings.serve.max_video_frames,
                      max_clips=settings.serve.max_clips_per_video,
                      description="profiling reference videos")
    require_usable(dataset, part, minimum=1)
    profile = profile_clips(loaded.network, card, part,
                            estimator_clips=settings.train.estimator_clips)
    experiment_id = tracking.configure_mlflow(settings)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tags({"vidmon.job": "register", "vidmon.model_file": str(model_file),
                         "vidmon.format": loaded.format,
                         "vidmon.skipped_files": str(len(part.skipped))})
        tracking.log_dataset(dataset, "reference")
        info = tracking.log_version(loaded, card, profile, settings.model_name, "registered")
    version = str(info.registered_model_version)
    champion = registry.ensure_champion(MlflowClient(), settings.model_name, version)
    right, clips = profile.class_accuracy()
    per_class = {c: float(right[i] / clips[i]) if clips[i] else float("nan")
                 for i, c in enumerate(card.labels)}
    chance = 1.0 / len(card.labels)
    warnings = reference_warnings(profile.accuracy, per_class,
                                  dict(zip(card.labels, clips.tolist())), chance)
    for warning in warnings:
        log.warning("%s", warning)
    outcome = RegisterOutcome(version, champion, loaded.format, run.info.run_id,
                              len(profile.table), profile.accuracy, per_class, chance,
                              warnings, len(part.skipped), time.perf_counter() - started)
    log.info("registered %s version %s (%s)%s: reference accuracy %.3f on %d clips, %.1fs",
             settings.model_name, version, loaded.format, " as champion" if champion else "",
             profile.accuracy, len(profile.table), outcome.seconds)
    return outcome


def register_command(settings: Settings, model_file: Path, card: Path,
                     reference_data: str | Path) -> int:
    """``vidmon register``: the outcome as JSON on stdout; the per-class reference accuracy
    and any warning about it on stderr, where a person reads them."""
    import sys

    outcome = register_model(settings, model_file, card, reference_data)
    print(f"reference accuracy {outcome.reference_accuracy:.3f} on {outcome.reference_rows} "
          f"clips (chance {outcome.chance_accuracy:.3f}); per class:", file=sys.stderr)
    for label, accuracy in outcome.per_class_accuracy.items():
        print(f"  {label:<30} {accuracy:.3f}", file=sys.stderr)
    for warning in outcome.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    print(json.dumps(asdict(outcome), indent=2))
    return 0
