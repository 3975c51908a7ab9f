"""Copies of each report's Evidently runs in an Evidently workspace, for ``evidently ui``.

The store keeps the report; this is where users who already browse Evidently look.
A failure here is logged and never fails the report.
"""

from __future__ import annotations

import logging
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
