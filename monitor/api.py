"""Monitoring routes: reports, their Evidently pages, and the timeline for charts.

Everything is read from the store by id; no request value reaches the filesystem.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel

from monitor.errors import NotFound
from monitor.report_page import evidently_assets
from monitor.store.reports import ReportRepository
from monitor.store.retrains import RetrainRepository


class ErrorOut(BaseModel):
    """The body of every error answer."""

    error: str
    detail: str


_DESCRIBED = {400: "malformed request", 401: "no admin key sent",
              403: "admin key refused or admin endpoints off", 404: "no such resource",
              409: "not possible in the current state",
              413: "over a size limit (the message names it)", 415: "unsupported content type",
              422: "invalid input", 503: "overloaded, or the store or model is not ready; "
                                         "see Retry-After",
              504: "waited past the request deadline; see Retry-After"}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer with."""
    schema = {"$ref": "#/components/schemas/ErrorOut"}
    return {status: {"model": ErrorOut, "description": _DESCRIBED[status],
                     "content": {"application/json": {"schema": schema}}}
            for status in statuses}


READ_ERRORS = responses(400, 413, 422, 503)
ReportId = Annotated[str, Path(max_length=64)]
MAX_OFFSET = 10_000_000
router = APIRouter(tags=["monitoring"])


def _reports(request: Request) -> ReportRepository:
    return request.app.state.reports


@router.get("/v1/reports", responses=READ_ERRORS)
def list_reports(
    request: Request,
    model_name: str | None = None,
    model_version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    """Report summaries, newest window first; filter by model version and window end."""
    items, total = _reports(request).list(model_name=model_name, model_version=model_version,
                                          since=since, until=until, limit=limit, offset=offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/v1/reports/{report_id}", responses={**READ_ERRORS, **responses(404)})
def get_report(request: Request, report_id: ReportId) -> dict[str, Any]:
    """One report's summary: drift per column, embedding and class drift, accuracies."""
    report = _reports(request).get(report_id)
    if report is None:
        raise NotFound(f"no report {report_id!r}")
    return report


@router.get("/v1/reports/{report_id}/html", response_class=HTMLResponse,
            responses={**READ_ERRORS, **responses(404),
                       200: {"content": {"text/html": {}}, "description": "the page"}})
def report_page(request: Request, report_id: ReportId) -> HTMLResponse:
    """The report page: vidmon's summary with the Evidently reports embedded."""
    reports = _reports(request)
    page = reports.html(report_id)
    if page is None:
        if reports.get(report_id) is not None:
            raise NotFound(f"the page of report {report_id!r} was pruned by retention "
                           f"(VIDMON_RETENTION__REPORT_DAYS); its summary is at "
                           f"/v1/reports/{report_id}")
        raise NotFound(f"no report {report_id!r}")
    return HTMLResponse(page)


_ASSET_TYPES = {".js": "text/javascript", ".woff2": "font/woff2"}


@router.get("/v1/reports/{report_id}/assets/{name}", response_class=FileResponse,
            responses={**READ_ERRORS, **responses(404),
                       200: {"content": {"text/javascript": {}, "font/woff2": {}},
                             "description": "the file"}})
def report_asset(report_id: ReportId, name: Annotated[str, Path(max_length=64)]) -> FileResponse:
    """Evidently's script and font, which every report page loads from ``assets/`` beside
    it (the same files for every report; the script's name carries Evidently's version,
    so browsers keep it)."""
    source = evidently_assets().get(name)
    if source is None:
        raise NotFound(f"no report asset {name!r}")
    return FileResponse(source, media_type=_ASSET_TYPES.get(source.suffix),
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})


@router.get("/v1/monitoring/timeline", responses=READ_ERRORS)
def timeline(
    request: Request,
    model_name: str | None = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> dict[str, Any]:
    """Drift scores and accuracies per window, oldest first."""
    return {"points": _reports(request).timeline(model_name=model_name, since=since,
                                                 limit=limit)}


@router.get("/v1/alerts", responses=READ_ERRORS)
def list_alerts(
    request: Request,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Alerts, newest first: each event (drift, retrain triggered, promoted, rejected,
    failed or abandoned, rollback, monitor stale) with its payload and its delivery to
    each webhook."""
    return {"items": request.app.state.alerts.list(limit=limit, since=since)}


@router.get("/v1/retrains", responses=READ_ERRORS)
def list_retrains(
    request: Request,
    model_name: str | None = None,
    triggered_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Every retrain decision, newest first: trigger reasons, report ids, MLflow run,
    challenger version, gate result, status."""
    retrains: RetrainRepository = request.app.state.retrains
    return {"items": retrains.list(model_name=model_name, limit=limit,
                                   triggered_only=triggered_only)}
