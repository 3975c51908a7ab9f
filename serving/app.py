"""``create_app(settings, source)``: the FastAPI service and its lifecycle.

At start it migrates the store (or, with the store down, starts degraded: predictions are
spooled and the migrations run when the store returns), loads the model from ``source``
(injected, so this package never imports MLflow), starts the batcher, the writer and the
poll for a new champion; uvicorn only accepts requests once that is done. At shutdown the
batcher drains and the writer makes everything queued durable.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine

from monitor import __version__
from monitor.alerts import Alerter, Sender, check_monitor
from monitor.api import router as monitoring_router
from monitor.objects.clips import ClipStore
from monitor.clock import Clock, system_clock
from monitor.errors import SetupError
from monitor.labeling import LabelingQueue
from monitor.runtime import resolve_device
from monitor.settings import MediaSettings, ServeSettings, Settings
from monitor.store import PredictionRepository, create_store_engine, upgrade_database
from monitor.store.engine import OutageLog
from monitor.store.alerts import AlertRepository
from monitor.store.labeling import LabelingRepository
from monitor.store.media import StreamRepository, VideoJobRepository
from monitor.store.reports import ReportRepository
from monitor.store.sources import SourceRepository
from monitor.store.retrains import RetrainRepository
from monitor.video import DecodeLimits
from serving.admin import router as admin_router
from serving.auth import Keys
from serving.batcher import DynamicBatcher
from serving.clip_keeper import ClipKeeper
from monitor.cpu_share import CoreShare, ThreadBudget
from serving.dashboard import router as dashboard_router
from serving.docs import router as docs_router
from serving.http import BodyLimit, Observe, install_error_handlers
from serving.media_routes import router as media_router
from serving.metrics import MonitoringCollector, ServiceMetrics, StreamCollector
from serving.routes import router
from serving.service import PredictionService
from serving.spool import Spool
from serving.sources import SourceNames
from serving.streams import StreamPuller
from serving.videos import VideoJobRunner
from serving.swap import ModelHolder, ModelSource, in_own_thread, load_warm
from serving.writer import DurableWriter, store_failure

log = logging.getLogger(__name__)


def _migrate(engine: Engine) -> str | None:
    """Migrate the store; the reason it failed, or None. A service may start without its
    store: predictions go to the spool and the migrations run when the store returns."""
    try:
        upgrade_database(engine)
    except Exception as exc:  # noqa: BLE001 - any failure to reach or migrate the store
        reason = store_failure(exc)
        log.warning("starting without the store (%s); predictions will be spooled", reason)
        return reason
    return None


def _writer(serve: ServeSettings, engine: Engine, repository: PredictionRepository,
            store_error: str | None) -> DurableWriter:
    return DurableWriter(
        repository, Spool(serve.spool_path), max_queue=serve.writer_queue_size,
        batch_size=serve.writer_batch_size, commit_delay_s=serve.writer_commit_delay_ms / 1000,
        replay_interval_s=serve.replay_interval_s, ensure_store=lambda: upgrade_database(engine),
        store_ready=store_error is None, store_error=store_error)


def _decode_limits(serve: ServeSettings) -> DecodeLimits:
    return DecodeLimits(max_frames=serve.max_video_frames, max_clips=serve.max_clips_per_video,
                        max_pixels=serve.max_decoded_pixels,
                        max_frame_pixels=serve.max_frame_pixels,
                        max_seconds=serve.max_decode_seconds)


def _body_limit(serve: ServeSettings, media: MediaSettings):  # type: ignore[no-untyped-def]
    def limit_for(path: str) -> int:
        if path.startswith("/v1/predict"):
            return serve.max_request_bytes
        if path == "/v1/videos":  # the file, and a form's few fields around it
            return media.max_video_bytes + 64 * 1024
        return serve.max_body_bytes
    return limit_for


async def _watch_monitor(settings: Settings, app: FastAPI,
                         predictions: PredictionRepository) -> None:
    """Every few minutes, alert if the monitor has stopped producing reports (any replica
    may notice; the alert's key keeps it to one per stall)."""
    every = min(300.0, settings.stale_after / 4)
    loop = asyncio.get_running_loop()
    outage = OutageLog(log, "checking that the monitor reports")
    while True:
        await asyncio.sleep(every)
        try:
            await loop.run_in_executor(None, check_monitor, app.state.alerter, predictions,
                                       app.state.reports, settings.stale_after)
            outage.ok()
        except Exception as error:  # the store may be away for a while: look again next time
            outage.failed(error)


def create_app(settings: Settings, source: ModelSource, clock: Clock = system_clock) -> FastAPI:
    """Build the service; nothing starts until the app's lifespan begins. Predictions and
    labels are stamped by ``clock`` (simulations run on their own)."""
    serve = settings.serve
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_store_engine(settings.database_url)
        store_error = _migrate(engine)
        repository = PredictionRepository(engine)
        app.state.reports = ReportRepository(engine)
        app.state.retrains = RetrainRepository(engine)
        collector = MonitoringCollector(app.state.reports, app.state.retrains, clock)
        metrics.registry.register(collector)
        alerts = AlertRepository(engine)
        app.state.alerts, app.state.alerter = alerts, Alerter(settings, alerts, clock)
        sender = Sender(settings, alerts).start()  # waits out a store that is away
        writer = None
        if serve.log_predictions:
            writer = _writer(serve, engine, repository, store_error)
            writer.start()
        device = resolve_device(serve.device)
        runtime = await in_own_thread(load_warm, source, settings.model_uri, str(device))
        models = ModelHolder(runtime, source, settings.model_uri,
                             on_swap=lambda new: metrics.set_model(new.name, new.version))
        threads = ThreadBudget(serve.threads or CoreShare(serve.threads_interval_s))
        batcher = DynamicBatcher(
            models.predict, serve.max_batch_size, serve.max_wait_ms,
            on_batch=lambda stats: metrics.batch_size.observe(stats.size),
            max_queued_clips=serve.max_queued_clips, deadline_s=serve.request_deadline_s,
            before_batch=threads)
        await batcher.start()
        poller = asyncio.create_task(models.poll(serve.model_poll_interval_s))
        watchdog = asyncio.create_task(_watch_monitor(settings, app, repository))
        keeper = ClipKeeper(ClipStore.of(settings), settings.objects.clip_queue)
        service = PredictionService(
            models, batcher, writer, keeper, top_k=serve.top_k,
            clip_sample_rate=serve.clip_sample_rate, decode_workers=serve.decode_workers,
            clock=clock, limits=_decode_limits(serve))
        metrics.set_model(runtime.name, runtime.version)
        metrics.gauge("vidmon_batcher_queue_depth", "clips waiting for the model",
                      lambda: batcher.queued)
        metrics.gauge("vidmon_model_threads", "threads the model computes on (0 before "
                      "the first forward pass)", lambda: float(threads.threads or 0))
        for name in ("stored", "skipped", "dropped", "failures"):
            metrics.gauge(f"vidmon_clips_{name}", f"sampled clips {name} (clip store)",
                          lambda n=name: float(getattr(keeper.counts, n)))
        metrics.gauge("vidmon_clip_queue_depth", "clips waiting for the clip store",
                      lambda: float(keeper.depth))
        metrics.gauge("vidmon_clip_store_available", "1 while clips reach the clip store",
                      lambda: float(keeper.available))
        if writer is not None:
            for name in ("queued", "written", "spooled", "replayed", "rejected", "flushes",
                         "labels_spooled"):
                metrics.gauge(f"vidmon_log_records_{name}", f"prediction records {name}",
                              lambda n=name: getattr(writer.counters, n))
            metrics.gauge("vidmon_log_queue_depth", "records waiting for the store",
                          lambda: writer.depth)
            metrics.gauge("vidmon_spool_records", "entries waiting in the spool files",
                          lambda: writer.spool_pending)
            metrics.gauge("vidmon_store_available", "1 while writes go to the store",
                          lambda: float(writer.store_available))
        app.state.labeling = LabelingQueue(
            LabelingRepository(engine), settings.monitor, source.profile, clock)
        app.state.service, app.state.repository = service, repository
        app.state.sources = SourceNames(SourceRepository(engine), serve.max_sources, clock)
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        app.state.video_jobs = VideoJobRepository(engine)
        app.state.streams = StreamRepository(engine)
        runner = VideoJobRunner(service, app.state.video_jobs, settings.media,
                                settings.monitor.clips_per_video, serve.max_frame_pixels,
                                holder, settings.objects)
        puller = StreamPuller(service, app.state.streams, settings.media,
                              serve.max_frame_pixels, holder)
        media_tasks = [asyncio.create_task(runner.run()), asyncio.create_task(puller.run())]
        streams_collector = StreamCollector(lambda: puller.stats)
        metrics.registry.register(streams_collector)
        metrics.gauge("vidmon_video_jobs_running", "long-video jobs running on this replica",
                      lambda: float(len(runner.running)))
        metrics.gauge("vidmon_video_clips_total", "clips of long videos classified here",
                      lambda: float(runner.clips_done))
        app.state.writer, app.state.ready = writer, True
        log.info("serving %s version %s on %s", runtime.name, runtime.version, device)
        try:
            yield
        finally:
            app.state.ready = False
            for task in media_tasks:
                task.cancel()
            await puller.stop()
            await runner.stop()
            metrics.registry.unregister(streams_collector)
            poller.cancel()
            watchdog.cancel()
            sender.stop()
            metrics.registry.unregister(collector)
            await batcher.stop()
            service.close()
            if writer is not None:
                writer.stop()
            engine.dispose()

    # The documentation routes are vidmon's own (serving.docs): offline, and named in metrics.
    app = FastAPI(title="vidmon", version=__version__, lifespan=lifespan,
                  description="Video classification with monitoring built in.",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings, app.state.metrics, app.state.ready = settings, metrics, False
    app.state.source, app.state.clock = source, clock
    app.state.keys = Keys(settings)

    install_error_handlers(app)
    # inside Observe: counted
    app.add_middleware(BodyLimit, limit_for=_body_limit(serve, settings.media))

    def observe(route: str, status: int, seconds: float) -> None:
        metrics.latency.labels(route=route).observe(seconds)
        metrics.requests.labels(route=route, status=str(status)).inc()

    app.add_middleware(Observe, observe=observe)

    app.include_router(router)
    app.include_router(media_router)
    app.include_router(monitoring_router)
    app.include_router(admin_router)
    app.include_router(dashboard_router)
    app.include_router(docs_router)
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or ``SetupError`` saying the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise SetupError(f"port {port} on {host} is taken (another vidmon serve, or the "
                             "Evidently or MLflow UI?): stop it or pick another with --port"
                             ) from None
        raise SetupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings, source: ModelSource) -> int:
    """``vidmon serve``: the service on uvicorn until stopped. The model's version and the
    port are checked first, so a missing model or a taken port is one clear error."""
    import uvicorn

    source.version_of(settings.model_uri)  # NoModel before anything starts
    sock = bind(settings.serve.host, settings.serve.port)
    config = uvicorn.Config(create_app(settings, source), log_level=settings.log_level.lower(),
                            timeout_graceful_shutdown=30,
                            limit_concurrency=settings.serve.limit_concurrency)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0 if server.started else 3
