"""The dashboard: one page at ``/`` and the JSON it draws from, ``/v1/dashboard``.

The page is static HTML with a little JavaScript that draws its charts as SVG (no CDN:
deployments may have no internet). Everything it shows comes from the store and, for
model versions and run links, from the model registry behind the app's source.
"""

from __future__ import annotations

from datetime import timedelta
from importlib import resources
from typing import Any, Protocol, runtime_checkable

from monitor.alerts import ACTION_NEEDED
from monitor.api import responses
import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["dashboard"])

RECENT = 20


@runtime_checkable
class RegistryView(Protocol):
    """What the dashboard reads from the registry (``training.registry.RegistrySource``)."""

    def versions(self) -> list[dict[str, Any]]:
        """Registered versions, newest first, with aliases and run links."""

    def run_url(self, run_id: str | None) -> str | None:
        """A run's page in the MLflow UI."""


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def dashboard_page() -> HTMLResponse:
    """The dashboard page."""
    page = resources.files("serving").joinpath("static/dashboard.html").read_text()
    return HTMLResponse(page)


@router.get("/v1/dashboard", responses=responses(400, 413, 422, 503))
def dashboard_data(request: Request, hours: int = 168) -> dict[str, Any]:
    """Model versions and aliases, hourly prediction volume, drift and accuracy per report
    window, recent reports and retrain decisions, with links to their pages."""
    state = request.app.state
    settings = state.settings
    source = state.source
    registry = source if isinstance(source, RegistryView) else None
    service = getattr(state, "service", None)
    now = state.clock()  # the service's one clock (simulations run on their own)
    since = now - timedelta(hours=max(1, min(hours, 24 * 90)))
    reports, _ = state.reports.list(model_name=settings.model_name, limit=RECENT)
    decisions = state.retrains.list(model_name=settings.model_name, limit=100)
    latest = state.reports.get(reports[0]["id"]) if reports else None
    lags = state.repository.label_lags(settings.model_name, since=now - timedelta(hours=24)
                                       ) if latest else []
    return {
        "model_name": settings.model_name,
        "serving_version": service.runtime.version if service else None,
        "mlflow_ui": settings.mlflow_ui,
        "alpha": settings.monitor.alpha,
        "accuracy_drop": settings.retrain.accuracy_drop,
        "interval_s": settings.monitor.interval_s,
        "latest": None if latest is None else _latest(latest),
        "alerts": [{k: a[k] for k in ("id", "kind", "created_at", "model_version")} |
                   {"text": a["payload"].get("text", "")}
                   for a in state.alerts.list(limit=RECENT)],
        "action_needed": list(ACTION_NEEDED),
        "service": state.metrics.summary(),
        "label_lag_s": {"median": float(np.median(lags)) if lags else None,
                        "labels": len(lags)},
        "models": registry.versions() if registry else [],
        "volume": state.repository.hourly_volume(since=since),
        "timeline": state.reports.timeline(model_name=settings.model_name, limit=500),
        "sources": _sources(state.reports.source_statuses(settings.model_name)),
        "reports": [{**r, "html_url": f"/v1/reports/{r['id']}/html"} for r in reports],
        "retrains": [{**d, "run_url": registry.run_url(d.get("mlflow_run_id"))
                      if registry else None} for d in decisions],
        "since": since.isoformat(),
    }


def _sources(history: list[tuple[Any, dict[str, dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Each source seen in the recent reports: its status in the newest window it was in,
    its drifted columns there, and in how many of its tested windows it drifted (and when
    last); drifted ones first."""
    seen: dict[str, dict[str, Any]] = {}
    for end, statuses in history:  # newest first
        for source, result in statuses.items():
            entry = seen.setdefault(source, {
                "source": source, "status": result["status"],
                "drifted_columns": result["drifted_columns"], "window_end": end.isoformat(),
                "tested": 0, "drifted": 0, "last_drifted": None})
            if result["status"] in ("drifted", "no_drift"):
                entry["tested"] += 1
            if result["status"] == "drifted":
                entry["drifted"] += 1
                entry["last_drifted"] = entry["last_drifted"] or end.isoformat()
    return sorted(seen.values(), key=lambda e: (e["status"] != "drifted", -e["drifted"],
                                                e["source"]))


def _latest(report: dict[str, Any]) -> dict[str, Any]:
    """The newest report's verdict, accuracies and drifted columns, for the status line."""
    summary = report.get("summary") or {}
    drifted = [{"column": c, "score": d.get("score"), "method": d.get("method")}
               for c, d in (summary.get("column_drift") or {}).items() if d.get("drifted")]
    keys = ("id", "model_version", "window_start", "window_end", "created_at", "verdict",
            "rows", "labeled_rows", "estimated_accuracy", "estimated_accuracy_low",
            "estimated_accuracy_high", "estimate_method", "realized_accuracy",
            "realized_accuracy_low", "realized_accuracy_high", "realized_method",
            "accuracy_risk", "estimable", "labels_needed")
    said = ("reference_accuracy", "risk_reason", "estimate_reason")
    sources = {s: {"status": r.get("status"), "drifted_columns": r.get("drifted_columns", [])}
               for s, r in (summary.get("source_drift") or {}).items()}
    return {**{k: report.get(k) for k in keys}, **{k: summary.get(k) for k in said},
            "source_drift": sources,
            "reasons": summary.get("reasons") or [], "drifted_columns": drifted,
            "html_url": f"/v1/reports/{report['id']}/html"}
