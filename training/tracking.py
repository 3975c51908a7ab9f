"""MLflow tracking: where runs go, and what a run records besides its model (the reference
profile, the datasets it learned from or was profiled on)."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from monitor.card import ModelCard
from monitor.profile import ReferenceProfile
from monitor.settings import Settings
from training import flavor
from training.datasets import VideoDataset
from training.modelfile import LoadedNetwork

PROFILE_ARTIFACT = "reference_profile"
# Lineage tags: where a model's data lives and which run holds its exact file listing
# (with the split used), so a retrain finds the same data again; retrains carry them on.
TRAIN_DATA_TAG = "vidmon.data.train"
REFERENCE_DATA_TAG = "vidmon.data.reference"
LINEAGE_TAGS = tuple(f"{tag}{part}" for tag in (TRAIN_DATA_TAG, REFERENCE_DATA_TAG)
                     for part in ("", ".digest", ".run"))
_CONTEXT_TAGS = {"training": TRAIN_DATA_TAG, "reference": REFERENCE_DATA_TAG}


def check_tracking_server(uri: str, timeout_s: float = 10.0) -> None:
    """Fail at once, with ``SetupError``, when an MLflow tracking server at ``uri`` does not
    answer. MLflow's own client retries a refused connection for about four minutes
    (seven retries, growing backoff), which is right for a service riding out a restart
    but leaves a person at a command line waiting on warnings; a local store is not
    checked. Any HTTP answer counts as reachable."""
    import urllib.error
    import urllib.request

    from monitor.errors import SetupError

    if urlparse(uri).scheme not in ("http", "https"):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SetupError(f"cannot reach the MLflow server at {uri} ({reason}); start it "
                         "(e.g. `mlflow server`) or set VIDMON_MLFLOW_TRACKING_URI") from None


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


def end_abandoned_run(run_id: str, why: str) -> bool:
    """Mark KILLED, with ``why`` in the tag ``vidmon.abandoned``, a run that an earlier
    attempt left RUNNING (its process was killed, or stopped, before it could end it);
    False when the run has ended or is gone."""
    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return False
    if run.info.status != "RUNNING":
        return False
    client.set_tag(run_id, "vidmon.abandoned", why)
    client.set_terminated(run_id, status="KILLED")
    return True


def log_reference_profile(profile: ReferenceProfile) -> None:
    """Store the reference profile as artifacts of the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        profile.save(Path(tmp) / PROFILE_ARTIFACT)
        mlflow.log_artifacts(str(Path(tmp) / PROFILE_ARTIFACT), PROFILE_ARTIFACT)


def load_reference_profile(run_id: str) -> ReferenceProfile:
    """The reference profile logged with a run."""
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=PROFILE_ARTIFACT)
    return ReferenceProfile.load(local)


def log_dataset(dataset: VideoDataset, context: str) -> None:
    """Record a dataset in the active run: an MLflow dataset input (the listing, with its
    digest), its class counts and split sizes, and a lineage tag with its location.
    ``context`` is ``training`` or ``reference``."""
    root = dataset.source if dataset.source.is_dir() else dataset.source.parent
    source = dataset.location
    name = dataset.origin.rsplit("/", 1)[-1] if dataset.origin else root.name
    listing = pd.DataFrame([{"path": i.ref, "label": i.label, "split": i.split}
                            for i in dataset.items])
    description = dataset.describe()
    with warnings.catch_warnings():  # a local path matches two equivalent source kinds
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
        data = mlflow.data.from_pandas(listing, source=source, targets="label",
                                       name=f"{name} ({dataset.layout})",
                                       digest=str(description["digest"])[:32])
    mlflow.log_input(data, context=context)
    mlflow.log_dict(description, f"datasets/{context}.json")
    mlflow.log_text(listing.to_csv(index=False), f"datasets/{context}-files.csv")
    tag = _CONTEXT_TAGS[context]
    mlflow.set_tags({tag: source, f"{tag}.digest": str(description["digest"]),
                     f"{tag}.run": mlflow.active_run().info.run_id})
    mlflow.log_params({f"{context}_videos": len(dataset.items),
                       f"{context}_classes": len(dataset.labels),
                       **{f"{context}_{k}_videos": v for k, v in dataset.split_sizes().items()}})


ORIGIN_TAG = "vidmon.origin"  # trained | registered | retrained
REFERENCE_ACCURACY_TAG = "vidmon.reference_accuracy"
ORIGINS = ("trained", "registered", "retrained")


def log_version(loaded: LoadedNetwork, card: ModelCard, profile: ReferenceProfile,
                registered_name: str | None, origin: str) -> Any:
    """Log a model version in the active run: its card, its reference profile and accuracy,
    and the model (registered under ``registered_name`` when given, the version tagged
    with how it was made and its reference accuracy, so listings need no run lookups)."""
    if origin not in ORIGINS:
        raise ValueError(f"a version is one of {ORIGINS}, not {origin!r}")
    mlflow.log_dict(card.to_dict(), "card.json")
    mlflow.log_metric("reference_accuracy", profile.accuracy)
    mlflow.set_tag(ORIGIN_TAG, origin)
    log_reference_profile(profile)
    info = flavor.log_model(loaded, card, registered_name, int(profile.embeddings.shape[1]))
    if registered_name is not None and info.registered_model_version is not None:
        client = MlflowClient()
        version = str(info.registered_model_version)
        client.set_model_version_tag(registered_name, version, ORIGIN_TAG, origin)
        client.set_model_version_tag(registered_name, version, REFERENCE_ACCURACY_TAG,
                                     f"{profile.accuracy:.6f}")
    return info


def dataset_description(run_id: str, context: str) -> dict:
    """What :func:`log_dataset` recorded about a run's dataset."""
    local = mlflow.artifacts.download_artifacts(run_id=run_id,
                                                artifact_path=f"datasets/{context}.json")
    return json.loads(Path(local).read_text())


def dataset_files(lineage: dict[str, str], context: str) -> Path | None:
    """The exact file listing (path,label,split) a lineage's dataset was used with, as a
    manifest, or None when the lineage has no such dataset."""
    run_id = lineage.get(f"{_CONTEXT_TAGS[context]}.run")
    if run_id is None:
        return None
    return Path(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=f"datasets/{context}-files.csv"))
