"""The model registry: versions, their aliases and lineage, and loading one as a runtime.

Every model version (trained by vidmon, registered by a user, or retrained) is stored with
the ``vidmon`` flavor (:mod:`training.flavor`): its model file in its own format and its
card. A model URI is resolved to a version once, and the weights are then loaded by that
version number, so a runtime never carries one version's name with another's weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlflow
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from monitor.alerts import Alerter
from monitor.errors import Conflict, NoModel
from monitor.card import ModelCard
from monitor.profile import ReferenceProfile
from monitor.runtime import ModelRuntime
from monitor.settings import Settings
from monitor.store import create_store_engine, upgrade_database
from monitor.store.alerts import AlertRepository
from training.flavor import FLAVOR_NAME
from training.modelfile import LoadedNetwork, load_model_folder, move_network
from training.tracking import (
    LINEAGE_TAGS,
    ORIGIN_TAG,
    REFERENCE_ACCURACY_TAG,
    load_reference_profile,
)

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "vidmon.champion_history"
DECISION_TAG = "vidmon.decision_id"
ARCHIVED_TAG = "vidmon.archived"  # a version registered by mistake: kept, never served
_JOB_ORIGINS = {"train": "trained", "register": "registered", "retrain": "retrained"}


@dataclass
class VersionModel:
    """One registered version: its card, its network, and where it came from."""

    name: str
    version: str
    run_id: str | None
    card: ModelCard
    loaded: LoadedNetwork


def _parse(model_uri: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of a registered model URI, without asking the registry."""
    if not model_uri.startswith("models:/"):
        raise ValueError(f"{model_uri!r} is not a registered model URI (models:/NAME@ALIAS or "
                         "models:/NAME/VERSION)")
    ref = model_uri[len("models:/"):]
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, alias, None
    name, _, version = ref.partition("/")
    return name, None, version


def resolve(model_uri: str) -> tuple[str, str]:
    """(name, version) behind ``models:/<name>@<alias>`` or ``models:/<name>/<version>``: the
    one registry lookup of a load."""
    name, alias, version = _parse(model_uri)
    if alias is None:
        return name, str(version)
    try:
        return name, str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        missing_alias = (exc.error_code == "INVALID_PARAMETER_VALUE"
                         and "alias" in str(exc) and "not found" in str(exc))
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST" and not missing_alias:
            raise
        raise NoModel(f"no version of {name} is the {alias!r} ({model_uri}) in MLflow at "
                      f"{mlflow.get_tracking_uri()}") from None


def load_version(name: str, version: str) -> VersionModel:
    """Download and load one version (CPU, eval mode)."""
    local = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}")
    try:
        card, loaded = load_model_folder(local)
    except FileNotFoundError:
        raise ValueError(f"{name} version {version} was not stored by vidmon (no card); "
                         "register it with `vidmon register`") from None
    run_id = MlflowClient().get_model_version(name, version).run_id
    return VersionModel(name, version, run_id, card, loaded)


def runtime_for(model: VersionModel, device: torch.device) -> ModelRuntime:
    """The serving runtime of a loaded version on ``device``."""
    network = move_network(model.loaded.network, device).eval()
    return ModelRuntime(network, model.card, model.name, model.version, device)


def lineage(run_id: str | None) -> dict[str, str]:
    """The data tags of a version's run (training data, reference data)."""
    if not run_id:
        return {}
    tags = MlflowClient().get_run(run_id).data.tags
    return {k: v for k, v in tags.items() if k in LINEAGE_TAGS}


def ensure_champion(client: MlflowClient, name: str, version: str) -> bool:
    """Point the ``champion`` alias at ``version`` when no champion exists; True if it did."""
    try:
        client.get_model_version_by_alias(name, CHAMPION)
        return False
    except MlflowException:
        promote(client, name, version)
        return True


def has_card(name: str, version: str) -> bool:
    """Whether a version was stored with the vidmon flavor (a model file and its card);
    versions logged by vidmon before cards existed were not."""
    return FLAVOR_NAME in mlflow.models.get_model_info(f"models:/{name}/{version}").flavors


def trained_versions(client: MlflowClient, name: str) -> list[str]:
    """Loadable versions made by ``vidmon train`` or ``vidmon register`` (not by a retrain,
    not archived), oldest first."""
    versions = client.search_model_versions(f"name = '{name}'")
    made = sorted((str(v.version) for v in versions if DECISION_TAG not in v.tags
                   and ARCHIVED_TAG not in v.tags), key=int)
    return [v for v in made if has_card(name, v)]


def describe_versions(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    """Every registered version, newest first: aliases, how it was made (trained,
    registered, retrained), its reference accuracy, whether it is archived, and its run.
    Versions made before the tags existed are read from their runs."""
    found = client.search_model_versions(f"name = '{name}'")
    aliases: dict[str, list[str]] = {}
    if found:  # search results leave aliases out; the registered model has them
        for alias, version in client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(version), []).append(alias)
    described = []
    for v in sorted(found, key=lambda v: -int(v.version)):
        origin, accuracy = v.tags.get(ORIGIN_TAG), v.tags.get(REFERENCE_ACCURACY_TAG)
        if (origin is None or accuracy is None) and v.run_id:
            run = client.get_run(v.run_id)
            origin = origin or ("retrained" if DECISION_TAG in v.tags else
                                _JOB_ORIGINS.get(run.data.tags.get("vidmon.job", ""), "unknown"))
            accuracy = accuracy or run.data.metrics.get("reference_accuracy")
        described.append({
            "version": str(v.version), "aliases": sorted(aliases.get(str(v.version), [])),
            "run_id": v.run_id, "created_at": v.creation_timestamp,
            "origin": origin or "unknown",
            "reference_accuracy": None if accuracy is None else float(accuracy),
            "archived": ARCHIVED_TAG in v.tags})
    return described


def archive(client: MlflowClient, name: str, version: str) -> None:
    """Archive a version registered by mistake: it stays in MLflow with its run, but is
    never served (promotion refuses it) and the dashboard hides it. The champion cannot
    be archived: promote or roll back first."""
    client.get_model_version(name, str(version))  # raises for an unknown version
    if str(version) in _aliased(client, name, CHAMPION):
        raise Conflict(f"v{version} is the champion of {name}: promote another version or "
                       "roll back before archiving it")
    client.set_model_version_tag(name, str(version), ARCHIVED_TAG, "true")
    if str(version) in _aliased(client, name, CHALLENGER):
        client.delete_registered_model_alias(name, CHALLENGER)


def _refuse_archived(client: MlflowClient, name: str, version: str) -> None:
    if ARCHIVED_TAG in client.get_model_version(name, str(version)).tags:
        raise Conflict(f"v{version} of {name} is archived and is never served")


def _history(client: MlflowClient, name: str) -> list[str]:
    tag = client.get_registered_model(name).tags.get(HISTORY_TAG, "")
    return [v for v in tag.split(",") if v]


def promote(client: MlflowClient, name: str, version: str) -> str | None:
    """Point ``champion`` at ``version`` and remember the one it replaces; returns that. A
    ``challenger`` alias on ``version`` goes: it is no longer challenging anyone."""
    try:
        previous = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        previous = None
    if previous == str(version):
        return previous
    _refuse_archived(client, name, str(version))  # raises for an unknown version too
    history = _history(client, name) + ([previous] if previous else [])
    client.set_registered_model_alias(name, CHAMPION, str(version))
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history[-50:]))
    if str(version) in _aliased(client, name, CHALLENGER):
        client.delete_registered_model_alias(name, CHALLENGER)
    return previous


def _aliased(client: MlflowClient, name: str, alias: str) -> set[str]:
    """The version ``alias`` points at, as a set (empty when it points nowhere)."""
    try:
        return {str(client.get_model_version_by_alias(name, alias).version)}
    except MlflowException:
        return set()


def rollback(client: MlflowClient, name: str) -> tuple[str, str]:
    """Move ``champion`` back to the version it pointed at before; returns (from, to)."""
    history = _history(client, name)
    if not history:
        raise Conflict(f"{name} has no earlier champion to roll back to")
    current = str(client.get_model_version_by_alias(name, CHAMPION).version)
    target = history.pop()
    if ARCHIVED_TAG in client.get_model_version(name, target).tags:
        raise Conflict(f"v{target}, the champion before v{current}, is archived; promote "
                         "the version to serve instead")
    client.set_registered_model_alias(name, CHAMPION, target)
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history))
    return current, target


class RegistrySource:
    """The MLflow registry as the service's model source (see ``serving.swap.ModelSource``)."""

    def __init__(self, settings: Settings) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        self.model_name = settings.model_name
        self.ui_url = settings.mlflow_ui
        self._experiments: dict[str, str] = {}
        self._profiles = profile_loader(settings)

    def version_of(self, model_uri: str) -> str:
        """The version the URI resolves to now."""
        return resolve(model_uri)[1]

    def load(self, model_uri: str, device: str, version: str | None = None) -> ModelRuntime:
        """The runtime of ``version`` (resolved from the URI once when not given)."""
        name = _parse(model_uri)[0]
        version = version or resolve(model_uri)[1]
        return runtime_for(load_version(name, version), torch.device(device))

    def profile(self, model_name: str, model_version: str) -> ReferenceProfile:
        """The version's reference profile (cached)."""
        return self._profiles(model_name, model_version)

    def promote(self, version: str) -> str | None:
        """Make ``version`` the champion (see :func:`promote`)."""
        return promote(MlflowClient(), self.model_name, version)

    def rollback(self) -> tuple[str, str]:
        """Move the champion back (see :func:`rollback`)."""
        return rollback(MlflowClient(), self.model_name)

    def versions(self) -> list[dict[str, Any]]:
        """Registered versions that are not archived, newest first: aliases, run, how
        each was made and its reference accuracy (see ``serving.dashboard.RegistryView``)."""
        return [{**v, "run_url": self.run_url(v["run_id"])}
                for v in describe_versions(MlflowClient(), self.model_name)
                if not v["archived"]]

    def run_url(self, run_id: str | None) -> str | None:
        """The run's page in the MLflow UI."""
        if not run_id:
            return None
        if run_id not in self._experiments:
            self._experiments[run_id] = MlflowClient().get_run(run_id).info.experiment_id
        return f"{self.ui_url}/#/experiments/{self._experiments[run_id]}/runs/{run_id}"


def profile_loader(settings: Settings) -> Callable[[str, str], ReferenceProfile]:
    """Reference profile of a registered model version (from its run), cached."""
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    cache: dict[tuple[str, str], ReferenceProfile] = {}

    def load(name: str, version: str) -> ReferenceProfile:
        if (name, version) not in cache:
            run_id = MlflowClient().get_model_version(name, version).run_id
            try:
                cache[(name, version)] = load_reference_profile(run_id)
            except MlflowException:
                raise Conflict(f"{name} version {version} has no reference profile in its "
                               "MLflow run: register models with vidmon register or vidmon "
                               "train; drift reports and the labeling queue need it") from None
        return cache[(name, version)]

    return load


def promote_command(settings: Settings, version: str) -> int:
    """``vidmon promote``: make ``version`` the champion; prints both as JSON."""
    import json

    previous = RegistrySource(settings).promote(version)
    print(json.dumps({"champion": version, "previous_champion": previous}))
    return 0


def versions_command(settings: Settings, show_archived: bool, as_json: bool) -> int:
    """``vidmon versions``: the registered versions, newest first, as a table (or JSON)."""
    import json

    tracking_configure(settings)
    versions = [v for v in describe_versions(MlflowClient(), settings.model_name)
                if show_archived or not v["archived"]]
    if as_json:
        print(json.dumps(versions, indent=2, default=str))
        return 0
    if not versions:
        print(f"no versions of {settings.model_name} registered yet: run `vidmon train` or "
              "`vidmon register MODEL_FILE --card CARD --reference-data DATA`")
        return 0
    print(f"{'version':>8}  {'origin':<11}{'reference accuracy':>19}  aliases")
    for v in versions:
        accuracy = "–" if v["reference_accuracy"] is None else f"{v['reference_accuracy']:.3f}"
        flags = ", ".join(v["aliases"] + (["archived"] if v["archived"] else []))
        print(f"{'v' + v['version']:>8}  {v['origin']:<11}{accuracy:>19}  {flags}")
    return 0


def archive_command(settings: Settings, version: str) -> int:
    """``vidmon archive``: hide a version registered by mistake; prints it as JSON."""
    import json

    tracking_configure(settings)
    archive(MlflowClient(), settings.model_name, version)
    print(json.dumps({"archived": version, "model": settings.model_name}))
    return 0


def tracking_configure(settings: Settings) -> None:
    """Point MLflow at the settings' tracking store."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)


def rollback_command(settings: Settings) -> int:
    """``vidmon rollback``: the champion goes back one; prints the move as JSON."""
    import json

    moved_from, moved_to = RegistrySource(settings).rollback()
    engine = create_store_engine(settings.database_url)
    upgrade_database(engine)
    Alerter(settings, AlertRepository(engine)).rollback(settings.model_name, moved_from,
                                                        moved_to)
    engine.dispose()
    print(json.dumps({"rolled_back_from": moved_from, "champion": moved_to}))
    return 0
