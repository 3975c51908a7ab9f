"""MLflow helpers: tracking setup, logging a trained model, the registry and loading.

Models are logged in the standard ``pytorch`` flavor, so the MLflow UI and tools see them.
They also carry a weights-only ``state_dict`` and the architecture config: MLflow 3
refuses to unpickle models by default, and vidmon's loader rebuilds the network from
that config and loads the weights with ``torch.load(weights_only=True)``, so loading a
model never executes pickled code.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from monitor.profile import ReferenceProfile
from monitor.settings import Settings
from training.model import ModelConfig, R2Plus1D

CHAMPION = "champion"
MODEL_ARTIFACT = "model"
PROFILE_ARTIFACT = "reference_profile"
STATE_DICT_FILE = "state_dict.pt"
METADATA_KEY = "vidmon"


@dataclass(frozen=True)
class LoadedModel:
    """A network rebuilt from the registry, with what the service needs to feed it."""

    model: R2Plus1D
    config: ModelConfig
    name: str | None
    version: str | None
    run_id: str | None


def configure_mlflow(settings: Settings) -> str:
    """Point MLflow at the settings' store and return the experiment id.

    A local store (SQLite or file) gets its artifact folder from the settings; a tracking
    server keeps its own.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if urlparse(settings.mlflow_tracking_uri).scheme in ("", "file", "sqlite"):
        artifact_location = Path(settings.mlflow_artifacts_dir).resolve().as_uri()
    return client.create_experiment(settings.experiment_name, artifact_location=artifact_location)


def model_signature(config: ModelConfig) -> ModelSignature:
    """Float clips (N, 3, T, H, W) in; logits (N, classes) out."""
    clip_shape = (-1, 3, config.frames, config.height, config.width)
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), clip_shape, "clip")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, config.num_classes), "logits")]),
    )


def model_metadata(config: ModelConfig, fps: float) -> dict[str, Any]:
    """What travels with the MLflow model: label names, input size and architecture."""
    return {
        METADATA_KEY: {
            "label_names": list(config.label_names),
            "input_size": {"frames": config.frames, "height": config.height,
                           "width": config.width, "fps": fps},
            "embedding_dim": config.embedding_dim,
            "model_config": config.to_dict(),
        }
    }


class _DropServingInputWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to validate serving input example" not in record.getMessage()


@contextmanager
def _without_serving_input_warning() -> Iterator[None]:
    """MLflow checks the input example by feeding it through its generic pyfunc server, which
    takes neither tensor lists nor (logits, embedding) outputs. vidmon serves with its own
    runtime (``load_model`` below), so that check's failure is a false alarm; drop it alone."""
    logger = logging.getLogger("mlflow.models.model")
    drop = _DropServingInputWarning()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def log_model(model: R2Plus1D, fps: float, registered_name: str | None) -> Any:
    """Log the model (and register it when ``registered_name`` is given) in the active run."""
    config = model.config
    cpu_model = R2Plus1D(config)
    cpu_model.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    cpu_model.eval()
    example = np.zeros((1, 3, config.frames, config.height, config.width), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp, _without_serving_input_warning():
        weights = Path(tmp) / STATE_DICT_FILE
        torch.save(cpu_model.state_dict(), weights)
        return mlflow.pytorch.log_model(
            cpu_model,
            name=MODEL_ARTIFACT,
            signature=model_signature(config),
            input_example=example,
            metadata=model_metadata(config, fps),
            extra_files=[str(weights)],
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            registered_model_name=registered_name,
            serialization_format="pickle",
        )


def log_reference_profile(profile: ReferenceProfile) -> None:
    """Store the reference profile as artifacts of the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        profile.save(Path(tmp) / PROFILE_ARTIFACT)
        mlflow.log_artifacts(str(Path(tmp) / PROFILE_ARTIFACT), PROFILE_ARTIFACT)


def ensure_champion(client: MlflowClient, name: str, version: str) -> bool:
    """Point the ``champion`` alias at ``version`` when no champion exists; True if it did."""
    try:
        client.get_model_version_by_alias(name, CHAMPION)
        return False
    except MlflowException:
        promote(client, name, version)
        return True


def trained_versions(client: MlflowClient, name: str) -> list[str]:
    """Versions registered by ``vidmon train`` (not by a retrain), oldest first."""
    versions = client.search_model_versions(f"name = '{name}'")
    return sorted((str(v.version) for v in versions if "vidmon.decision_id" not in v.tags),
                  key=int)


def load_model(model_uri: str, device: torch.device | str = "cpu") -> LoadedModel:
    """Load ``models:/<name>@<alias>``, ``models:/<name>/<version>`` or ``runs:/...``."""
    local = Path(mlflow.artifacts.download_artifacts(model_uri))
    mlmodel = mlflow.models.Model.load(str(local))
    meta = (mlmodel.metadata or {}).get(METADATA_KEY)
    if meta is None:
        raise ValueError(f"{model_uri} was not logged by vidmon: no '{METADATA_KEY}' metadata")
    config = ModelConfig.from_dict(meta["model_config"])
    weights = next(local.rglob(STATE_DICT_FILE), None)
    if weights is None:
        raise ValueError(f"{model_uri} has no {STATE_DICT_FILE}")
    network = R2Plus1D(config)
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    network = network.to(device).eval()
    name, version = _registry_identity(model_uri)
    return LoadedModel(network, config, name, version, mlmodel.run_id)


class RegistrySource:
    """The MLflow registry as the service's model source (see ``serving.swap.ModelSource``)."""

    def __init__(self, settings: Settings) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        self.model_name = settings.model_name
        self.ui_url = settings.mlflow_ui
        self._experiments: dict[str, str] = {}

    def load(self, model_uri: str, device: str) -> LoadedModel:
        """Load a registered (or run) model onto ``device``."""
        return load_model(model_uri, device)

    def version_of(self, model_uri: str) -> str:
        """The version the URI resolves to now."""
        return _registry_identity(model_uri)[1] or model_uri

    def promote(self, version: str) -> str | None:
        """Make ``version`` the champion (see :func:`promote`)."""
        return promote(MlflowClient(), self.model_name, version)

    def rollback(self) -> tuple[str, str]:
        """Move the champion back (see :func:`rollback`)."""
        return rollback(MlflowClient(), self.model_name)

    def versions(self) -> list[dict[str, Any]]:
        """Registered versions, newest first: aliases, run, and who made it (see
        ``serving.dashboard.RegistryView``)."""
        client = MlflowClient()
        found = client.search_model_versions(f"name = '{self.model_name}'")
        aliases: dict[str, list[str]] = {}
        if found:  # search results leave aliases out; the registered model has them
            for alias, version in client.get_registered_model(self.model_name).aliases.items():
                aliases.setdefault(str(version), []).append(alias)
        return [{"version": str(v.version), "aliases": sorted(aliases.get(str(v.version), [])),
                 "run_id": v.run_id, "created_at": v.creation_timestamp,
                 "made_by": "retrain" if "vidmon.decision_id" in v.tags else "train",
                 "run_url": self.run_url(v.run_id)}
                for v in sorted(found, key=lambda v: -int(v.version))]

    def run_url(self, run_id: str | None) -> str | None:
        """The run's page in the MLflow UI."""
        if not run_id:
            return None
        if run_id not in self._experiments:
            self._experiments[run_id] = MlflowClient().get_run(run_id).info.experiment_id
        return f"{self.ui_url}/#/experiments/{self._experiments[run_id]}/runs/{run_id}"


HISTORY_TAG = "vidmon.champion_history"


def _history(client: MlflowClient, name: str) -> list[str]:
    tag = client.get_registered_model(name).tags.get(HISTORY_TAG, "")
    return [v for v in tag.split(",") if v]


def promote(client: MlflowClient, name: str, version: str) -> str | None:
    """Point ``champion`` at ``version`` and remember the one it replaces; returns that."""
    try:
        previous = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        previous = None
    if previous == str(version):
        return previous
    client.get_model_version(name, str(version))  # raises for an unknown version
    history = _history(client, name) + ([previous] if previous else [])
    client.set_registered_model_alias(name, CHAMPION, str(version))
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history[-50:]))
    return previous


def rollback(client: MlflowClient, name: str) -> tuple[str, str]:
    """Move ``champion`` back to the version it pointed at before; returns (from, to)."""
    history = _history(client, name)
    if not history:
        raise ValueError(f"{name} has no earlier champion to roll back to")
    current = str(client.get_model_version_by_alias(name, CHAMPION).version)
    target = history.pop()
    client.set_registered_model_alias(name, CHAMPION, target)
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history))
    return current, target


def profile_loader(settings: Settings) -> Callable[[str, str], ReferenceProfile]:
    """Reference profile of a registered model version (from its training run), cached."""
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    cache: dict[tuple[str, str], ReferenceProfile] = {}

    def load(name: str, version: str) -> ReferenceProfile:
        if (name, version) not in cache:
            run_id = MlflowClient().get_model_version(name, version).run_id
            cache[(name, version)] = load_reference_profile(run_id)
        return cache[(name, version)]

    return load


def _registry_identity(model_uri: str) -> tuple[str | None, str | None]:
    """Registered name and version behind a ``models:/`` URI, or (None, None)."""
    if not model_uri.startswith("models:/"):
        return None, None
    ref = model_uri[len("models:/"):]
    client = MlflowClient()
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, str(client.get_model_version_by_alias(name, alias).version)
    name, _, version = ref.partition("/")
    return name, version


def load_reference_profile(run_id: str) -> ReferenceProfile:
    """The reference profile logged with a training run."""
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=PROFILE_ARTIFACT)
    return ReferenceProfile.load(local)

