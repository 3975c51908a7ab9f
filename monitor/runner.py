"""Assemble a monitor process from settings: store, Evidently workspace, report schedule and
the closed loop. ``vidmon monitor`` runs it on the wall clock; the demo on simulated time."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from monitor.alerts import Alerter, Sender
from monitor.clock import Clock, system_clock
from monitor.closed_loop import closed_loop_step, subprocess_starter
from monitor.job import JobOutcome, ProfileLoader
from monitor.retention import build_collector
from monitor.scheduler import Monitor
from monitor.settings import Settings
from monitor.store import PredictionRepository, create_store_engine, upgrade_database
from monitor.store.alerts import AlertRepository
from monitor.store.reports import ReportRepository
from monitor.store.retrains import RetrainRepository
from monitor.objects.workspace import EvidentlyWorkspace

log = logging.getLogger(__name__)


def build_monitor(
    settings: Settings,
    load_profile: ProfileLoader,
    *,
    clock: Clock = system_clock,
    on_outcome: Callable[[JobOutcome], None] | None = None,
    retrain_log: Path | None = None,
) -> Monitor:
    """A :class:`Monitor` on the settings' store. Due retrains start as ``vidmon retrain``
    processes that inherit these settings (their output appended to ``retrain_log`` when
    given)."""
    engine = create_store_engine(settings.database_url)
    upgrade_database(engine)
    workspace = EvidentlyWorkspace.of(settings)
    predictions, reports = PredictionRepository(engine), ReportRepository(engine)
    retrains = RetrainRepository(engine)
    alerts = AlertRepository(engine)
    alerter = Alerter(settings, alerts, clock)
    starter = subprocess_starter(retrains, timedelta(seconds=settings.retrain.backoff_s),
                                 env={**os.environ, **settings.to_env()}, output=retrain_log,
                                 clock=clock, alerter=alerter)
    closed_loop = closed_loop_step(settings, predictions, reports, retrains, load_profile,
                                   starter, clock, alerter)
    collector = build_collector(settings, engine, clock)
    return Monitor(settings.monitor, predictions, reports, load_profile, on_outcome=on_outcome,
                   workspace=workspace, closed_loop=closed_loop, clock=clock,
                   sender=Sender(settings, alerts), collect_garbage=collector.run,
                   gc_interval_s=settings.retention.interval_s, on_close=starter.stop)


def monitor_command(settings: Settings, load_profile: ProfileLoader, once: bool) -> int:
    """``vidmon monitor``: report on the last window and exit (``once``), or run the schedule
    until SIGTERM/SIGINT; each outcome is printed as a JSON line."""
    import json
    import signal
    from dataclasses import asdict

    monitor = build_monitor(
        settings, load_profile,
        on_outcome=lambda outcome: print(json.dumps(asdict(outcome), default=str), flush=True))
    if once:
        monitor.run_once()
        return 0
    signal.signal(signal.SIGTERM, lambda *_: monitor.stop())
    signal.signal(signal.SIGINT, lambda *_: monitor.stop())
    try:
        monitor.serve_forever()
    finally:
        monitor.close()
    if monitor.busy:
        # A report still running would keep the process alive to its end (its thread is
        # joined at exit), past the grace period; the lease is already given up and the
        # report's rows are one transaction, so the next leader makes it instead.
        log.warning("stopping mid-report; the next leader reports its window")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
