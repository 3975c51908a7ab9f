"""Admin routes: reload, promote and roll back the served model. They need
``Authorization: Bearer <key>`` with ``VIDMON_ADMIN_KEY``; with no key configured they are
switched off, never open."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any, Protocol

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from monitor.api import responses
from monitor.errors import Conflict, Forbidden, NotFound, NotReady
from monitor.retrain_policy import RetrainDecision
from serving.auth import Keys
from serving.swap import ModelHolder


class RegistryAdmin(Protocol):
    """Registry operations behind the admin routes (``training.registry.RegistrySource``)."""

    def promote(self, version: str) -> str | None:
        """Make ``version`` the champion; returns the one it replaced."""

    def rollback(self) -> tuple[str, str]:
        """Move the champion back; returns (from, to). Raises ``Conflict`` when there is
        no earlier champion or it is archived."""


def require_admin(request: Request) -> None:
    """An admin key (``VIDMON_ADMIN_KEY`` or one of ``VIDMON_AUTH__ADMIN_KEYS``); with none
    configured the admin routes are off."""
    keys: Keys = request.app.state.keys
    if "admin" not in keys.roles.values():
        raise Forbidden("admin endpoints are disabled: set VIDMON_ADMIN_KEY (or "
                        "VIDMON_AUTH__ADMIN_KEYS) to enable them")
    keys.check(request, "admin")


router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)],
                   responses=responses(400, 401, 403, 404, 409, 413, 422, 503))


class PromoteIn(BaseModel):
    version: str = Field(min_length=1, max_length=32)


def _holder(request: Request) -> ModelHolder:
    if not getattr(request.app.state, "ready", False):
        raise NotReady("the model is not loaded yet")
    return request.app.state.service.models


async def _reload(request: Request, before: str | None = None) -> dict[str, Any]:
    """Reload, reporting against the version that served ``before`` this request: the
    server's own poll may already have made the swap a promotion asked for."""
    holder = _holder(request)
    before = before or holder.runtime.version
    result = await holder.reload_async()
    return {**asdict(result), "previous_version": before,
            "swapped": result.version != before}


@router.post("/reload")
async def reload(request: Request) -> dict[str, Any]:
    """Serve whatever the champion alias points at now."""
    return await _reload(request)


@router.post("/promote")
async def promote(request: Request, body: PromoteIn) -> dict[str, Any]:
    """Make a registered version the champion and serve it."""
    registry: RegistryAdmin = request.app.state.source
    before = _holder(request).runtime.version
    try:
        previous = await asyncio.get_running_loop().run_in_executor(
            None, registry.promote, body.version)
    except Conflict:  # an archived version: it exists, but is never served
        raise
    except Exception as exc:  # unknown version, registry refusing: say so, change nothing
        raise NotFound(f"cannot promote version {body.version}: {exc}") from None
    return {"previous_champion": previous, **await _reload(request, before)}


@router.post("/rollback")
async def rollback(request: Request) -> dict[str, Any]:
    """Move the champion back to the version before the last promotion and serve it."""
    registry: RegistryAdmin = request.app.state.source
    before = _holder(request).runtime.version
    # No earlier champion (or an archived one) is a Conflict: valid request, wrong state.
    moved_from, moved_to = await asyncio.get_running_loop().run_in_executor(
        None, registry.rollback)
    await asyncio.get_running_loop().run_in_executor(
        None, request.app.state.alerter.rollback, _holder(request).runtime.name, moved_from,
        moved_to)
    return {"rolled_back_from": moved_from, "rolled_back_to": moved_to,
            **await _reload(request, before)}



@router.post("/retrain", status_code=202)
def retrain(request: Request) -> dict[str, Any]:
    """Queue a retrain of the serving model; the monitor starts it (never this process).
    While one is pending for the model, that one is returned: asking twice queues once."""
    runtime = _holder(request).runtime
    retrains = request.app.state.retrains
    pending = retrains.pending(runtime.name)
    if pending is None:
        decision = RetrainDecision(True, ["requested through /v1/admin/retrain"], [])
        decision_id = retrains.record(decision, runtime.name, runtime.version)
    else:
        decision_id = pending["id"]
    return {"decision_id": decision_id, "status": "pending", "queued": pending is None}
