"""Copies of each report's Evidently runs in an Evidently workspace, for ``evidently ui``.

The store keeps the report; this is where users who already browse Evidently look.
A failure here is logged and never fails the report, nor garbage collection.

Retention prunes the copies by age like vidmon's own report pages (``REPORT_DAYS``):
Evidently 0.7 names each run with a UUIDv7, whose first 48 bits are the milliseconds since
the epoch when the run was stored, so a run's age is read from its id without loading it.
That is the machine's clock, which is the one that matters for disk.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EvidentlyWorkspace:
    """A local Evidently workspace with one project for vidmon's reports."""

    def __init__(self, path: str | Path, project_name: str = "vidmon") -> None:
        self.path = Path(path)
        self.project_name = project_name
        self._project_id: Any = None

    def _workspace(self):  # type: ignore[no-untyped-def]
        from evidently.ui.workspace import Workspace

        return Workspace.create(str(self.path))

    def add(self, snapshots: dict[str, Any], name: str) -> int:
        """Add each snapshot as a run named ``<name> <kind>``; returns how many were added."""
        try:
            workspace = self._workspace()
            if self._project_id is None:
                found = workspace.search_project(self.project_name)
                project = found[0] if found else workspace.create_project(
                    self.project_name, description="vidmon monitoring reports")
                self._project_id = project.id
            for kind, snapshot in snapshots.items():
                workspace.add_run(self._project_id, snapshot, name=f"{name} {kind}")
            return len(snapshots)
        except Exception:  # a copy for browsing must never take a report down
            log.exception("could not add the report to the Evidently workspace %s", self.path)
            return 0

    def prune(self, before: datetime, dry_run: bool = False) -> int:
        """Delete (with ``dry_run``, count) the runs stored before ``before``; how many.
        Runs whose id carries no time (not a UUIDv7) are kept."""
        if not self.path.exists():  # no report was copied yet: nothing to create here
            return 0
        try:
            workspace = self._workspace()
            found = workspace.search_project(self.project_name)
            if not found:
                return 0
            project_id = found[0].id
            cutoff_ms = before.timestamp() * 1000
            old = [run for run in workspace.list_runs(project_id)
                   if (stamp := _stored_ms(run)) is not None and stamp < cutoff_ms]
            if not dry_run:
                for run in old:
                    workspace.delete_run(project_id, run)
            return len(old)
        except Exception:  # a copy for browsing must never take garbage collection down
            log.exception("could not prune the Evidently workspace %s", self.path)
            return 0


def _stored_ms(run_id: Any) -> int | None:
    """Milliseconds since the epoch in a UUIDv7; None for other ids."""
    value = run_id if isinstance(run_id, uuid.UUID) else uuid.UUID(str(run_id))
    return value.int >> 80 if value.version == 7 else None
