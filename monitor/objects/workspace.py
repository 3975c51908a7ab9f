"""Copies of each report's Evidently runs in an Evidently workspace, for ``evidently ui``.

The store keeps the report; this is where users who already browse Evidently look.
A failure here is logged and never fails the report, nor garbage collection.

The workspace is a local folder or an object-store URL. Evidently's own workspace is a tree
of files (``<project id>/metadata.json``, ``<project id>/snapshots/<run id>.json``), so on
an object store vidmon writes the same tree: each add builds the runs in a temp workspace
holding only the project's metadata, and uploads the new files. ``aws s3 sync`` (or any S3
client) of the prefix into a folder gives a workspace ``evidently ui`` opens as it is.

Retention prunes the copies by age like vidmon's own report pages (``REPORT_DAYS``):
Evidently 0.7 names each run with a UUIDv7, whose first 48 bits are the milliseconds since
the epoch when the run was stored, so a run's age is read from its id without loading it.
That is the machine's clock, which is the one that matters for disk.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.objects import ObjectStore, is_remote, open_store

if TYPE_CHECKING:
    from monitor.settings import ObjectStoreSettings, Settings

log = logging.getLogger(__name__)


def _workspace(path: Path):  # type: ignore[no-untyped-def]
    from evidently.ui.workspace import Workspace

    return Workspace.create(str(path))


class EvidentlyWorkspace:
    """An Evidently workspace (a folder or an object-store URL) with one project for
    vidmon's reports."""

    def __init__(self, location: str | Path, project_name: str = "vidmon",
                 objects: ObjectStoreSettings | None = None) -> None:
        self.location = str(location)
        self.remote: ObjectStore | None = (open_store(self.location, objects)
                                           if is_remote(self.location) else None)
        self.path = Path(location) if self.remote is None else None
        self.project_name = project_name
        self._project_id: Any = None

    @classmethod
    def of(cls, settings: Settings) -> EvidentlyWorkspace | None:
        """The settings' workspace; None when it is off."""
        return (cls(settings.evidently_workspace, objects=settings.objects)
                if settings.evidently_workspace else None)

    def add(self, snapshots: dict[str, Any], name: str) -> int:
        """Add each snapshot as a run named ``<name> <kind>``; returns how many were added."""
        try:
            if self.remote is not None:
                return self._add_remote(snapshots, name)
            return self._add_runs(_workspace(self.path), snapshots, name)
        except Exception:  # a copy for browsing must never take a report down
            log.exception("could not add the report to the Evidently workspace %s",
                          self.location)
            return 0

    def _add_runs(self, workspace: Any, snapshots: dict[str, Any], name: str) -> int:
        """Add the runs to vidmon's project in ``workspace`` (made on first use)."""
        if self._project_id is None:
            found = workspace.search_project(self.project_name)
            project = found[0] if found else workspace.create_project(
                self.project_name, description="vidmon monitoring reports")
            self._project_id = project.id
        for kind, snapshot in snapshots.items():
            workspace.add_run(self._project_id, snapshot, name=f"{name} {kind}")
        return len(snapshots)

    def _add_remote(self, snapshots: dict[str, Any], name: str) -> int:
        remote = self.remote
        assert remote is not None
        with tempfile.TemporaryDirectory(prefix="vidmon-workspace-") as tmp:
            root = Path(tmp)
            keys = ([f"{self._project_id}/metadata.json"] if self._project_id is not None
                    else [i.key for page in remote.pages() for i in page  # once a process
                          if i.key.count("/") == 1 and i.key.endswith("/metadata.json")])
            for key in keys:  # the projects' metadata: one small file each
                (root / key).parent.mkdir(parents=True, exist_ok=True)
                (root / key).write_bytes(remote.get(key))
            before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
            self._add_runs(_workspace(root), snapshots, name)
            written = [p for p in root.rglob("*")
                       if p.is_file() and before.get(p) != p.read_bytes()]
            # Runs before metadata: a reader never finds a project whose runs are missing.
            for path in sorted(written, key=lambda p: p.name == "metadata.json"):
                remote.put_file(path.relative_to(root).as_posix(), path)
        return len(snapshots)

    def prune(self, before: datetime, dry_run: bool = False) -> int:
        """Delete (with ``dry_run``, count) the runs stored before ``before``; how many.
        Runs whose id carries no time (not a UUIDv7) are kept."""
        cutoff_ms = before.timestamp() * 1000
        if self.remote is not None:
            return self._prune_remote(cutoff_ms, dry_run)
        if not self.path.exists():  # no report was copied yet: nothing to create here
            return 0
        try:
            workspace = _workspace(self.path)
            found = workspace.search_project(self.project_name)
            if not found:
                return 0
            project_id = found[0].id
            old = [run for run in workspace.list_runs(project_id)
                   if (stamp := _stored_ms(run)) is not None and stamp < cutoff_ms]
            if not dry_run:
                for run in old:
                    workspace.delete_run(project_id, run)
            return len(old)
        except Exception:  # a copy for browsing must never take garbage collection down
            log.exception("could not prune the Evidently workspace %s", self.location)
            return 0

    def _prune_remote(self, cutoff_ms: float, dry_run: bool) -> int:
        remote = self.remote
        assert remote is not None
        pruned = 0
        try:
            for page in remote.pages():
                for info in page:
                    parts = info.key.split("/")
                    if len(parts) != 3 or parts[1] != "snapshots":
                        continue
                    try:
                        stamp = _stored_ms(parts[2].removesuffix(".json"))
                    except ValueError:
                        continue
                    if stamp is not None and stamp < cutoff_ms:
                        pruned += 1
                        if not dry_run:
                            remote.delete(info.key)
        except Exception:  # a copy for browsing must never take garbage collection down
            log.exception("could not prune the Evidently workspace %s", self.location)
        return pruned


def _stored_ms(run_id: Any) -> int | None:
    """Milliseconds since the epoch in a UUIDv7; None for other ids."""
    value = run_id if isinstance(run_id, uuid.UUID) else uuid.UUID(str(run_id))
    return value.int >> 80 if value.version == 7 else None
