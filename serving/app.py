"""``create_app(settings, source)``: the FastAPI service and its lifecycle.

At start it migrates the store, loads the model from ``source`` (injected, so this package
never imports MLflow), starts the batcher, the writer and the poll for a new champion;
uvicorn only accepts requests once that is done. At shutdown the batcher drains and the
writer flushes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from monitor.clips import ClipStore
from monitor.clock import Clock, system_clock
from monitor.api import router as monitoring_router
from monitor.errors import (
    InvalidInput,
    Forbidden,
    NotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
    VidmonError,
)
from monitor.runtime import resolve_device
from monitor.settings import Settings
from monitor.store import PredictionRepository, create_store_engine, upgrade_database
from monitor.store.reports import ReportRepository
from monitor.store.retrains import RetrainRepository
from serving.admin import router as admin_router
from serving.batcher import DynamicBatcher
from serving.dashboard import router as dashboard_router
from serving.metrics import ServiceMetrics
from serving.routes import router
from serving.service import PredictionService
from serving.spool import Spool
from serving.swap import ModelHolder, ModelSource
from serving.writer import PredictionWriter

log = logging.getLogger(__name__)

_STATUS: dict[type[VidmonError], int] = {
    InvalidInput: 422,
    UnsupportedMediaType: 415,
    PayloadTooLarge: 413,
    NotFound: 404,
    Unauthorized: 401,
    Forbidden: 403,
    Overloaded: 503,
    NotReady: 503,
}


def _error_response(exc: VidmonError) -> JSONResponse:
    status = next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), 400)
    headers = None
    if isinstance(exc, Overloaded):
        headers = {"Retry-After": str(exc.retry_after_s)}
    elif isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status, headers=headers)


def create_app(settings: Settings, source: ModelSource, clock: Clock = system_clock) -> FastAPI:
    """Build the service; nothing starts until the app's lifespan begins. Predictions and
    labels are stamped by ``clock`` (simulations run on their own)."""
    serve = settings.serve
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_store_engine(settings.database_url)
        upgrade_database(engine)
        repository = PredictionRepository(engine)
        app.state.reports = ReportRepository(engine)
        app.state.retrains = RetrainRepository(engine)
        writer = None
        if serve.log_predictions:
            writer = PredictionWriter(
                repository, Spool(serve.spool_path), max_queue=serve.writer_queue_size,
                batch_size=serve.writer_batch_size,
                flush_interval_s=serve.writer_flush_interval_s,
                replay_interval_s=serve.replay_interval_s)
            writer.start()
        device = resolve_device(serve.device)
        runtime = source.load(settings.model_uri, str(device))
        models = ModelHolder(runtime, source, settings.model_uri,
                             on_swap=lambda new: metrics.set_model(new.name, new.version))
        batcher = DynamicBatcher(
            models.predict, serve.max_batch_size, serve.max_wait_ms,
            on_batch=lambda stats: metrics.batch_size.observe(stats.size))
        await batcher.start()
        poller = asyncio.create_task(models.poll(serve.model_poll_interval_s))
        service = PredictionService(
            models, batcher, writer, ClipStore(settings.clip_dir), top_k=serve.top_k,
            clip_sample_rate=serve.clip_sample_rate, max_video_frames=serve.max_video_frames,
            max_clips_per_video=serve.max_clips_per_video,
            decode_workers=serve.decode_workers, clock=clock)
        metrics.set_model(runtime.name, runtime.version)
        metrics.gauge("vidmon_batcher_queue_depth", "clips waiting for the model",
                      lambda: batcher.queued)
        if writer is not None:
            for name in ("queued", "written", "spooled", "replayed", "rejected"):
                metrics.gauge(f"vidmon_log_records_{name}", f"prediction records {name}",
                              lambda n=name: getattr(writer.counters, n))
            metrics.gauge("vidmon_log_queue_depth", "records waiting for the store",
                          lambda: writer.depth)
            metrics.gauge("vidmon_spool_records", "records waiting in the spool file",
                          lambda: writer.spool_pending)
        app.state.service, app.state.repository = service, repository
        app.state.writer, app.state.ready = writer, True
        log.info("serving %s version %s on %s", runtime.name, runtime.version, device)
        try:
            yield
        finally:
            app.state.ready = False
            poller.cancel()
            await batcher.stop()
            service.close()
            if writer is not None:
                writer.stop()
            engine.dispose()

    app = FastAPI(title="vidmon", version="0.1.0", lifespan=lifespan,
                  description="Video classification with monitoring built in.")
    app.state.settings, app.state.metrics, app.state.ready = settings, metrics, False
    app.state.source = source

    @app.exception_handler(VidmonError)
    async def _domain_error(_: Request, exc: VidmonError) -> JSONResponse:
        return _error_response(exc)

    @app.middleware("http")
    async def _observe(request: Request, call_next):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        response = await call_next(request)
        # The route template, not the raw path: unknown paths must not grow the label set.
        matched = request.scope.get("route")
        route = getattr(matched, "path", "unmatched")
        metrics.latency.labels(route=route).observe(time.perf_counter() - started)
        metrics.requests.labels(route=route, status=str(response.status_code)).inc()
        return response

    app.include_router(router)
    app.include_router(monitoring_router)
    app.include_router(admin_router)
    app.include_router(dashboard_router)
    return app


def serve(settings: Settings, source: ModelSource) -> int:
    """``vidmon serve``: the service on uvicorn until stopped."""
    import uvicorn

    uvicorn.run(create_app(settings, source), host=settings.serve.host,
                port=settings.serve.port, log_level=settings.log_level.lower(),
                timeout_graceful_shutdown=30)
    return 0
