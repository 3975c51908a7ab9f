"""Monitoring routes: reports, their Evidently pages, and the timeline for charts.

Everything is read from the store by id; no request value reaches the filesystem.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from monitor.errors import NotFound
from monitor.store.reports import ReportRepository
from monitor.store.retrains import RetrainRepository

router = APIRouter(tags=["monitoring"])


def _reports(request: Request) -> ReportRepository:
    return request.app.state.reports


@router.get("/v1/reports")
def list_reports(
    request: Request,
    model_name: str | None = None,
    model_version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Report summaries, newest window first; filter by model version and window end."""
    items, total = _reports(request).list(model_name=model_name, model_version=model_version,
                                          since=since, until=until, limit=limit, offset=offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/v1/reports/{report_id}")
def get_report(request: Request, report_id: str) -> dict[str, Any]:
    """One report's summary: drift per column, embedding and class drift, accuracies."""
    report = _reports(request).get(report_id)
    if report is None:
        raise NotFound(f"no report {report_id!r}")
    return report


@router.get("/v1/reports/{report_id}/html", response_class=HTMLResponse)
def report_page(request: Request, report_id: str) -> HTMLResponse:
    """The report page: vidmon's summary with the Evidently reports embedded."""
    page = _reports(request).html(report_id)
    if page is None:
        raise NotFound(f"no report {report_id!r}")
    return HTMLResponse(page)


@router.get("/v1/monitoring/timeline")
def timeline(
    request: Request,
    model_name: str | None = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> dict[str, Any]:
    """Drift scores and accuracies per window, oldest first."""
    return {"points": _reports(request).timeline(model_name=model_name, since=since,
                                                 limit=limit)}


@router.get("/v1/retrains")
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
