"""The monitor's half of the closed loop: a retrain decision after each report, and starting
due retrains as separate processes, one at a time, retried with backoff; and the worker that
runs them on a cluster, where the monitor only decides (:class:`RetrainWorker`)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from monitor.alerts import Alerter
from monitor.clock import Clock, offset_env, system_clock
from monitor.job import JobOutcome, ProfileLoader
from monitor.retrain_policy import RetrainPolicy, decide_retrain, risk_run
from monitor.settings import RetrainSettings, Settings
from monitor.store.engine import OutageLog
from monitor.store.reports import ReportRepository
from monitor.store.repository import PredictionRepository
from monitor.store.retrains import RetrainRepository

log = logging.getLogger(__name__)


def policy_from(settings: Settings) -> RetrainPolicy:
    """The pure policy's parameters from settings."""
    retrain = settings.retrain
    return RetrainPolicy(windows=retrain.windows,
                         min_labeled=retrain.labeled_needed(settings.monitor.min_rows),
                         cooldown=timedelta(minutes=retrain.cooldown_minutes),
                         accuracy_drop=retrain.accuracy_drop)


HISTORY = 200  # reports looked at to find where the current drift run began


def evaluate_retrain(
    policy: RetrainPolicy, model_name: str, model_version: str, now: datetime,
    predictions: PredictionRepository, reports: ReportRepository,
    retrains: RetrainRepository, load_profile: ProfileLoader,
) -> str:
    """Decide on the latest reports of the serving version and store the decision."""
    latest, _ = reports.list(model_name=model_name, model_version=model_version,
                             limit=max(HISTORY, policy.windows))
    latest = latest[::-1]
    reference_accuracy = load_profile(model_name, model_version).accuracy
    run = risk_run(latest, reference_accuracy, policy)
    labeled = len(predictions.labeled_clips(model_name, since=run[0][0]["window_start"],
                                            limit=policy.min_labeled)) if run else 0
    decision = decide_retrain(
        latest, reference_accuracy=reference_accuracy, labeled_available=labeled,
        last_retrain_at=retrains.last_retrain_at(model_name), now=now, policy=policy)
    decision_id = retrains.record(decision, model_name, model_version, now)
    log.info("retrain decision %s: %s (%s)", decision_id,
             "triggered" if decision.triggered else "not triggered", "; ".join(decision.reasons))
    return decision_id


Starter = Callable[[str], None]


class RetrainProcesses:
    """Starts ``vidmon retrain --decision ID`` as its own process (with ``env``, by default
    this process's, and ``clock`` passed down; its output appended to ``output`` when
    given). A process that dies without recording a result leaves its decision failed, so
    it is retried; :meth:`stop` ends the ones still running when their monitor stops, so
    nothing outlives it (seen: a demo's last retrain running on with parent 1, listed as
    "running" for ever)."""

    def __init__(self, retrains: RetrainRepository, backoff: timedelta,
                 command: list[str] | None = None, env: dict[str, str] | None = None,
                 output: Path | None = None, clock: Clock = system_clock,
                 alerter: Alerter | None = None) -> None:
        self.retrains, self.backoff, self.output = retrains, backoff, output
        self.base = command or [sys.executable, "-m", "simulations.cli", "retrain"]
        self.env, self.clock, self.alerter = env, clock, alerter
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._stopping: set[str] = set()  # stop() records these itself
        self._lock = threading.Lock()

    def __call__(self, decision_id: str) -> None:
        sink = open(self.output, "ab") if self.output else None  # noqa: SIM115 (closed by watch)
        child_env = {**(os.environ if self.env is None else self.env), **offset_env(self.clock)}
        process = subprocess.Popen([*self.base, "--decision", decision_id], env=child_env,
                                   stdout=sink, stderr=subprocess.STDOUT if sink else None)
        with self._lock:
            self._running[decision_id] = process

        def watch() -> None:
            code = process.wait()
            if sink:
                sink.close()
            with self._lock:
                self._running.pop(decision_id, None)
                stopping = decision_id in self._stopping
            if not stopping:
                self._failed_unless_finished(decision_id,
                                             f"retrain process exited with code {code}")

        threading.Thread(target=watch, name=f"retrain-{decision_id[:8]}", daemon=True).start()

    def _failed_unless_finished(self, decision_id: str, error: str) -> None:
        state = self.retrains.get(decision_id) or {}
        if state.get("status") != "running":
            return
        self.retrains.fail(decision_id, error, self.backoff, self.clock())
        failed = self.retrains.get(decision_id)
        if self.alerter is not None and failed is not None:
            self.alerter.retrain_outcome(failed)

    def running(self) -> list[str]:
        """Decisions whose process is running now."""
        with self._lock:
            return list(self._running)

    def stop(self, grace_s: float = 10.0) -> list[str]:
        """Terminate the running retrains (SIGTERM, then SIGKILL after ``grace_s``); each
        decision is left failed, to be retried by the next monitor. Returns their ids."""
        with self._lock:
            running = dict(self._running)
            self._stopping.update(running)
        for process in running.values():
            process.terminate()
        for decision_id, process in running.items():
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self._failed_unless_finished(
                decision_id, "stopped with the monitor that started it; retried by the next one")
        return list(running)


def subprocess_starter(retrains: RetrainRepository, backoff: timedelta,
                       command: list[str] | None = None,
                       env: dict[str, str] | None = None,
                       output: Path | None = None, clock: Clock = system_clock,
                       alerter: Alerter | None = None) -> RetrainProcesses:
    """A :class:`RetrainProcesses`: the starter of retrains as processes of their own."""
    return RetrainProcesses(retrains, backoff, command, env, output, clock, alerter)


def start_due_retrain(retrains: RetrainRepository, settings: RetrainSettings, now: datetime,
                      starter: Starter) -> str | None:
    """Start the next due retrain unless one is running; returns its decision id."""
    due = retrains.next_due(now, settings.max_attempts)
    if due is None or not retrains.start(due["id"]):
        return None
    log.info("starting retrain for decision %s (attempt %d)", due["id"], due["attempts"] + 1)
    starter(due["id"])
    return due["id"]


def closed_loop_step(
    settings: Settings, predictions: PredictionRepository, reports: ReportRepository,
    retrains: RetrainRepository, load_profile: ProfileLoader, starter: Starter,
    clock: Clock = system_clock, alerter: Alerter | None = None,
) -> Callable[[JobOutcome], None]:
    """What the monitor does after each report job: alert on the first window of input
    drift and of accuracy at risk (or not estimable), decide on a retrain (alerting when
    one is triggered), then start a due retrain when the settings allow."""
    policy = policy_from(settings)

    def step(outcome: JobOutcome) -> None:
        now = clock()
        if outcome.status == "reported" and outcome.model_name and outcome.model_version:
            if alerter is not None and outcome.report_id:
                alert_on_report(alerter, reports, outcome.report_id)
            decision_id = evaluate_retrain(policy, outcome.model_name, outcome.model_version,
                                           now, predictions, reports, retrains, load_profile)
            decision = retrains.get(decision_id) if alerter is not None else None
            if decision is not None and decision["triggered"]:
                alerter.retrain_triggered(decision)
        if settings.retrain.auto_start:
            start_due_retrain(retrains, settings.retrain, now, starter)

    return step


def alert_on_report(alerter: Alerter, reports: ReportRepository, report_id: str) -> bool:
    """Alert on a report: input drift, and accuracy at risk or not estimable, each unless
    the model version's window before said the same."""
    report = reports.get(report_id)
    if report is None:
        return False
    before, _ = reports.list(model_name=report["model_name"],
                             model_version=report["model_version"],
                             until=report["window_end"], limit=1)
    previous = reports.get(before[0]["id"]) if before else None
    drift = alerter.drift(report, previous["verdict"] if previous else None)
    risk = ((previous or {}).get("summary") or {}).get("accuracy_risk")
    return alerter.accuracy(report, risk if previous else None) or drift


class RetrainWorker:
    """``vidmon worker``: claims due retrains from the store and runs each as ``vidmon
    retrain --decision ID`` in a child process, holding it by heartbeat every third of
    ``retrain.lease_s``. A worker killed outright stops renewing, and another takes the
    retrain over after the lease; a worker whose hold is lost (taken over, cancelled, or
    the store unreachable for half a lease) kills its child, so two never finish one
    retrain. On SIGTERM it stops its child and gives the retrain back at once."""

    def __init__(self, settings: Settings, retrains: RetrainRepository,
                 command: list[str] | None = None, poll_s: float = 5.0,
                 clock: Clock = system_clock, holder: str | None = None) -> None:
        self.settings, self.retrains, self.clock = settings, retrains, clock
        self.base = command or [sys.executable, "-m", "simulations.cli", "retrain"]
        self.poll_s = poll_s
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self.stop_event = threading.Event()
        self.backoff = timedelta(seconds=settings.retrain.backoff_s)

    def run_once(self) -> str | None:
        """Claim and run one retrain to its end; its decision id, None when none was due."""
        lease = self.settings.retrain.lease_s
        claimed = self.retrains.claim(self.holder, self.clock(), lease,
                                      self.settings.retrain.max_attempts)
        if claimed is None:
            return None
        decision_id = claimed["id"]
        log.info("worker %s: running retrain %s (attempt %d)", self.holder, decision_id,
                 claimed["attempts"])
        env = {**os.environ, **self.settings.to_env(), **offset_env(self.clock)}
        child = subprocess.Popen([*self.base, "--decision", decision_id], env=env,
                                 preexec_fn=_die_with_parent)
        last_renewed = time.monotonic()
        while child.poll() is None:
            if self.stop_event.wait(min(lease / 3, 5.0)):
                _end(child)
                self.retrains.give_back(decision_id, self.holder, self.clock())
                log.info("worker %s: stopped; retrain %s given back", self.holder, decision_id)
                return decision_id
            try:
                held = self.retrains.heartbeat(decision_id, self.holder, self.clock())
                last_renewed = time.monotonic()
            except Exception:  # noqa: BLE001 - the store is away: the lease decides
                log.warning("worker %s: could not renew retrain %s", self.holder, decision_id)
                # Half the lease, checked every third of it: the child is dead before
                # another worker may take the retrain over, so two never both finish it.
                held = time.monotonic() - last_renewed < lease / 2
            if not held:
                log.warning("worker %s: retrain %s is no longer ours; killing it",
                            self.holder, decision_id)
                child.kill()  # no grace: the retrain is, or is about to be, another's
                child.wait()
                return decision_id
        if self.retrains.holds(decision_id, self.holder):  # exited without a result
            self.retrains.fail(decision_id, f"retrain process exited with code "
                               f"{child.returncode}", self.backoff, self.clock())
        return decision_id

    def serve_forever(self) -> None:
        """Claim and run retrains until :attr:`stop_event` is set."""
        outage = OutageLog(log, f"worker {self.holder}: looking for retrains")
        while not self.stop_event.is_set():
            try:
                ran = self.run_once()
                outage.ok()
            except Exception as error:  # noqa: BLE001 - the store may be away: look again later
                outage.failed(error)
                ran = None
            if ran is None:
                self.stop_event.wait(self.poll_s)


def _die_with_parent() -> None:
    """In the child: the kernel kills it when its worker dies, even by SIGKILL, so a
    killed worker's retrain never runs on beside the one that takes it over (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _end(child: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``."""
    child.terminate()
    try:
        child.wait(grace_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def worker_command(settings: Settings) -> int:
    """``vidmon worker``: run retrains the monitors decided, until SIGTERM or SIGINT."""
    from monitor.store import create_store_engine, upgrade_database

    engine = create_store_engine(settings.database_url)
    upgrade_database(engine)
    worker = RetrainWorker(settings, RetrainRepository(engine))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop_event.set())
    log.info("worker %s: waiting for retrains (lease %.0f s)", worker.holder,
             settings.retrain.lease_s)
    try:
        worker.serve_forever()
    finally:
        engine.dispose()
    return 0
