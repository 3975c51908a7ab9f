"""``vidmon demo``: the closed loop end to end on one machine, on simulated time.

It trains the first model if none is registered, starts the service (real HTTP on
127.0.0.1) and the monitor, and runs a timeline: clean traffic, then each drift phase in
turn until a retrained model has been promoted and has served for a few hours. Each
simulated hour is one report window. The clock stands still while a retrain runs, so the
timeline does not depend on the machine's speed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import httpx
from mlflow import MlflowClient
from pydantic import BaseModel

from monitor.cpu_share import CoreShare
from monitor.runner import build_monitor
from monitor.settings import Settings
from monitor.store import PredictionRepository, create_store_engine, upgrade_database
from monitor.store.reports import ReportRepository
from monitor.store.retrains import RetrainRepository
from serving.app import create_app
from serving.background import running_server
from simulations.clock import SimulatedClock, next_hour
from simulations.demo_output import cost_line, progress_line, write_outputs
from simulations.retrain_wait import wait_for_retrain
from simulations.scenarios import SCENARIOS, Scenario, build, compose
from simulations.timeline import Check, WindowRow, check_timeline
from simulations.traffic import HourResult, TrafficConfig, TrafficSimulator
from training import registry, tracking
from training.job import run_training
from training.registry import RegistrySource
from training.synthetic import ClipSpec

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

# Paths of the embedded defaults, laid under the demo folder unless set explicitly.
_LOCAL_PATHS: dict[str, Callable[[Path], object]] = {
    "database_url": lambda root: f"sqlite:///{root / 'vidmon.db'}",
    "mlflow_tracking_uri": lambda root: f"sqlite:///{root / 'mlflow.db'}",
    "mlflow_artifacts_dir": lambda root: root / "mlartifacts",
    "clip_dir": lambda root: root / "clips",
    "evidently_workspace": lambda root: root / "evidently-workspace"}
_RESET = ("vidmon.db", "vidmon.db-wal", "vidmon.db-shm", "clips", "evidently-workspace",
          "reports", "vidmon-spool.jsonl", "retrain.log")


@dataclass(frozen=True)
class DemoConfig:
    """The timeline and its sizes; the defaults run in a few minutes on 2 CPU cores."""

    phases: tuple[str, ...] = ("blur", "mirror")
    clean_hours: int = 4
    recovery_hours: int = 3
    max_phase_hours: int = 14
    requests_per_hour: int = 200
    concurrency: int = 8
    label_fraction: float = 0.8
    label_delay_hours: float = 0.25
    min_labeled: int = 450
    # Label this share of each hour's traffic through the labeling queue instead of
    # ``label_fraction`` uniformly (None: uniform).
    label_budget: float | None = None
    train_clips_per_class: int = 120
    train_epochs: int = 8
    retrain_epochs: int = 10
    output: Path = Path("vidmon-demo")
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [p for p in self.phases if p not in SCENARIOS]
        if unknown:
            raise ValueError(f"unknown scenario(s) {unknown}; choose from {sorted(SCENARIOS)}")
        if min(self.clean_hours, self.recovery_hours, self.max_phase_hours,
               self.requests_per_hour) < 1:
            raise ValueError("hours and requests per hour must be at least 1")
        if self.label_budget is not None and not 0 < self.label_budget <= 1:
            raise ValueError("the label budget is a share of traffic in (0, 1]")

    @property
    def queue_labels_per_hour(self) -> int:
        """Labels the queue hands out each hour in label-budget mode."""
        return max(1, round((self.label_budget or 0) * self.requests_per_hour))

    @property
    def retrain_min_labeled(self) -> int:
        """``RetrainSettings.min_labeled`` for the demo: ``min_labeled`` uniformly, 80 % of
        ten hours' queue labels on a budget (unless ``min_labeled`` was changed). Fewer
        were measured to relearn mirror's swapped orbit classes only in part: its
        challenger got 0.92 of fresh mirrored traffic right with 144 labels, 0.94 with 192
        and 0.97 with 230."""
        if self.label_budget is None or self.min_labeled != DemoConfig.min_labeled:
            return self.min_labeled
        return max(20, int(0.8 * 10 * self.queue_labels_per_hour))


@dataclass
class DemoResult:
    """What the demo did: a row per window, the checks, and where its outputs are."""

    rows: list[WindowRow]
    checks: list[Check]
    output: Path
    settings: Settings
    started: datetime
    seconds: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return all(c.passed for c in self.checks)


def _unless_set(part: M, defaults: dict[str, object]) -> M:
    """``part`` with the demo's ``defaults`` for the fields the user did not set (through
    ``VIDMON_<PART>__<FIELD>`` or code): a user's setting always wins."""
    return part.model_copy(update={name: value for name, value in defaults.items()
                                   if name not in part.model_fields_set})


def demo_settings(settings: Settings, config: DemoConfig) -> Settings:
    """The demo's settings: embedded stores in the demo folder, hour-long report windows
    and a retrain policy sized to the demo's traffic, for whatever the user left unset."""
    root = config.output.resolve()
    paths = {name: local(root) for name, local in _LOCAL_PATHS.items()
             if name not in settings.model_fields_set}
    train = _unless_set(settings.train, {
        "clips_per_class": config.train_clips_per_class, "epochs": config.train_epochs,
        "test_clips_per_class": 30, "seed": config.seed,
        "synthetic_dir": root / "synthetic-data"})
    serve = _unless_set(settings.serve, {
        "clip_sample_rate": 1.0, "model_poll_interval_s": 0.5,
        "spool_path": root / "vidmon-spool.jsonl"})
    # lateness 0: the demo's one server shares the store and answers only committed
    # predictions, so no row of a simulated hour can arrive after it.
    monitor = _unless_set(settings.monitor, {
        "interval_s": 3600, "window_minutes": 60, "window_predictions": None, "min_rows": 30,
        "lateness_s": 0})
    retrain = _unless_set(settings.retrain, {
        "windows": 2, "min_labeled": config.retrain_min_labeled, "cooldown_minutes": 180,
        "accuracy_drop": 0.05, "epochs": config.retrain_epochs, "learning_rate": 3e-3,
        "original_clips_per_class": 30, "holdout_fraction": 0.3, "backoff_s": 5.0,
        "max_attempts": 2,
        # The demo holds its traffic while a retrain runs, so the retrain may take every
        # core (in production it leaves serving half: RetrainSettings.threads).
        "threads": os.cpu_count() or 1})
    return settings.model_copy(update={**paths, "train": train, "serve": serve,
                                       "monitor": monitor, "retrain": retrain})


# What a vidmon command run in the demo folder needs to see the demo's run as it ran: its
# stores, and the report windows and retrain bar its dashboard draws against.
_FOLDER_ENV = ("database_url", "mlflow_tracking_uri", "mlflow_artifacts_dir", "clip_dir",
               "evidently_workspace", "model_name", "monitor", "retrain")


def write_folder_env(settings: Settings, root: Path) -> Path:
    """``root/.env`` with the demo's settings, so the printed ``cd root && vidmon serve``
    shows its stores with the demo's hourly windows (not the default 5-minute interval,
    which draws every hour as a quiet gap). Secrets and alert targets stay out of it."""
    env = settings.to_env()
    lines = [f"VIDMON_{name.upper()}={shlex.quote(env[f'VIDMON_{name.upper()}'])}"
             for name in _FOLDER_ENV if f"VIDMON_{name.upper()}" in env]
    path = root / ".env"
    path.write_text("# written by vidmon demo: the settings of its last run\n"
                    + "\n".join(lines) + "\n")
    return path


def reset_local_store(settings: Settings, root: Path) -> None:
    """A fresh store for each run when it lives in the demo folder (MLflow is kept, so the
    first model is trained once)."""
    if not settings.database_url.startswith(f"sqlite:///{root}"):
        return
    for name in _RESET:
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _cores_in_use(look_s: float = 0.5) -> tuple[int, float]:
    """This process's cores, and how many of them other processes keep busy now."""
    share = CoreShare(interval_s=look_s)
    share.threads_now()
    time.sleep(look_s * 1.1)
    share.threads_now()
    return share.cores, share.others_busy


def _has_base_model(settings: Settings) -> bool:
    tracking.configure_mlflow(settings)
    return bool(registry.trained_versions(MlflowClient(), settings.model_name))


def ensure_base_model(settings: Settings, say: Callable[[str], None]) -> str:
    """The first model trained by ``vidmon train`` (training one if none is registered),
    made the champion, so every demo starts from the model that never saw drift."""
    tracking.configure_mlflow(settings)
    client = MlflowClient()
    versions = registry.trained_versions(client, settings.model_name)
    if not versions:
        say(f"no model registered yet: training one ({settings.train.clips_per_class} clips "
            f"per class, {settings.train.epochs} epochs)...")
        outcome = run_training(settings)
        say(f"trained version {outcome.model_version}: held-out accuracy "
            f"{outcome.test_accuracy:.3f} in {outcome.total_seconds:.0f}s")
        versions = [str(outcome.model_version)]
    base = versions[-1]
    previous = registry.promote(client, settings.model_name, base)
    if previous not in (None, base):
        say(f"champion moved back from v{previous} to the base model v{base}")
    return base


class Demo:
    """One run of the timeline against a live service and monitor."""

    def __init__(self, settings: Settings, config: DemoConfig, url: str,
                 clock: SimulatedClock, say: Callable[[str], None]) -> None:
        self.settings, self.config, self.url = settings, config, url
        self.clock, self.say = clock, say
        self.engine = create_store_engine(settings.database_url)
        self.reports = ReportRepository(self.engine)
        self.retrains = RetrainRepository(self.engine)
        self.monitor = build_monitor(settings, registry.profile_loader(settings), clock=clock,
                                     retrain_log=config.output / "retrain.log")
        spec = settings.train
        self.traffic = TrafficSimulator(url, Scenario(), TrafficConfig(
            requests_per_hour=config.requests_per_hour, concurrency=config.concurrency,
            spec=ClipSpec(spec.frames, spec.height, spec.width), fps=spec.fps,
            label_fraction=0.0 if config.label_budget else config.label_fraction,
            label_delay_hours=config.label_delay_hours,
            seed=config.seed))
        self.rows: list[WindowRow] = []

    def run(self) -> list[WindowRow]:
        """Clean hours, then each drift phase until its challenger has served a while."""
        hour = 0
        for _ in range(self.config.clean_hours):
            self._hour(hour, "clean", "clean")
            hour += 1
        parts: list[Scenario] = []
        for name in self.config.phases:
            part = build(name, onset=hour)
            parts.append(part)
            self.traffic.scenario = compose(*parts)
            self.say(f"--- hour {hour}: {name} begins ({part.kind} drift) ---")
            began, promoted_at = hour, None
            # The phase waits up to max_phase_hours for a promotion; one that comes late
            # still gets its full recovery hours, so every promoted model is seen serving.
            while (hour - began < self.config.max_phase_hours if promoted_at is None
                   else hour - promoted_at < self.config.recovery_hours):
                row = self._hour(hour, name, part.kind)
                hour += 1
                if promoted_at is None and "promoted" in row.event:
                    promoted_at = hour
            if promoted_at is None:
                self.say(f"{name}: no promotion within {self.config.max_phase_hours} hours")
        retention = self.monitor.run_gc()  # what the monitor does every hour
        if retention is not None:
            self.say(retention.describe())
        return self.rows

    def _hour(self, hour: int, phase: str, kind: str) -> WindowRow:
        sent = asyncio.run(self.traffic.run_hour(float(hour)))
        if self.config.label_budget:
            sent.labels_sent += self._label_from_queue(sent)
        self.clock.set_hour(hour + 1)  # the window [hour, hour + 1) is over
        outcome = self.monitor.run_once()
        row = _row(hour, phase, kind, sent)
        if outcome.status == "reported" and outcome.report_id:
            _add_report(row, self.reports.get(outcome.report_id) or {})
        decisions = self.retrains.list(self.settings.model_name, limit=1)
        if decisions and decisions[0]["created_at"] >= self.clock.at(hour + 1):
            decision = decisions[0]
            row.decision_triggered = bool(decision["triggered"])
            row.decision_reasons = list(decision["reasons"])
            row.decision = ("retrain triggered" if decision["triggered"]
                            else decision["reasons"][-1])
            if decision["triggered"]:
                row.event = self._await_retrain(decision["id"])
        self.rows.append(row)
        self.say(progress_line(row))
        return row

    def _label_from_queue(self, sent: HourResult) -> int:
        """The labeling team's hour on a budget: it asks the queue which predictions to
        label and answers them (the simulator knows each event's truth)."""
        truth = {s.prediction_id: s.true_label for s in sent.sent if s.prediction_id}
        with httpx.Client(base_url=self.url, timeout=60) as client:
            response = client.get("/v1/labeling/queue",
                                  params={"limit": self.config.queue_labels_per_hour})
            response.raise_for_status()
            labels = [{"prediction_id": item["prediction_id"],
                       "label": truth[item["video_id"] or item["prediction_id"]]}
                      for item in response.json()["items"]
                      if (item["video_id"] or item["prediction_id"]) in truth]
            if not labels:
                return 0
            stored = client.post("/v1/feedback", json={"labels": labels})
            stored.raise_for_status()
            return len(stored.json()["stored"])

    def _await_retrain(self, decision_id: str) -> str:
        """Wait (the clock standing still) for the retrain while it shows progress and, if
        it was promoted, for the service to serve the new version."""
        waited = wait_for_retrain(
            lambda: self.retrains.get(decision_id) or {},
            lambda decision: len(self._epoch_losses(decision.get("mlflow_run_id"))),
            self.settings.retrain.epochs, self.say, log=self.config.output / "retrain.log")
        decision, status = waited.decision, waited.decision.get("status")
        if waited.gave_up:
            self.say(f"    retrain {waited.gave_up}")
            return f"retrain {waited.gave_up}"[:200]
        version, gate = decision["challenger_version"], decision["gate"] or {}
        if status == "rejected":
            return f"v{version} rejected: {gate.get('reason', '')}"
        if status == "cancelled":
            return f"retrain cancelled: {decision.get('error') or ''}"[:200]
        self._await_serving(version)
        return (f"v{version} promoted after {waited.seconds:.0f}s (recent accuracy "
                f"{gate.get('champion_recent', float('nan')):.2f} -> "
                f"{gate.get('challenger_recent', float('nan')):.2f})")

    def _epoch_losses(self, run_id: str | None) -> list[float]:
        """Training loss per finished epoch of the retrain's MLflow run, so far."""
        if not run_id:
            return []
        history = MlflowClient(self.settings.mlflow_tracking_uri).get_metric_history(
            run_id, "train_loss")
        return [m.value for m in sorted(history, key=lambda m: m.step)]

    def _await_serving(self, version: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while client.get("/readyz").json().get("version") != version:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the service did not swap to v{version}")
                time.sleep(0.2)


def _row(hour: int, phase: str, kind: str, sent: HourResult) -> WindowRow:
    versions = sorted({s.model_version for s in sent.sent if s.model_version}, key=int)
    return WindowRow(
        hour=hour, phase=phase, kind=kind, served_by=",".join(f"v{v}" for v in versions),
        requests=len(sent.sent), failures=sent.failures,
        correct=sum(s.prediction_id is not None and s.predicted_label == s.true_label
                    for s in sent.sent),
        labels_sent=sent.labels_sent)


def _add_report(row: WindowRow, report: dict) -> None:
    row.report_id = report.get("id")
    row.verdict = report.get("verdict")
    row.drift_share = report.get("drift_share")
    row.embedding_p = report.get("embedding_p_value")
    row.estimated_accuracy = report.get("estimated_accuracy")
    row.realized_accuracy = report.get("realized_accuracy")
    row.labeled_rows = report.get("labeled_rows") or 0
    estimates = (report.get("summary") or {}).get("accuracy_estimates") or {}
    row.estimates = {m: e["value"] for m, e in estimates.items()}
    if report.get("estimated_accuracy_low") is not None:
        row.estimated_interval = (report["estimated_accuracy_low"],
                                  report["estimated_accuracy_high"])


def run_demo(settings: Settings, config: DemoConfig,
             say: Callable[[str], None] = print) -> DemoResult:
    """Run the whole demo; writes its outputs under ``config.output``."""
    began = time.monotonic()
    config.output.mkdir(parents=True, exist_ok=True)
    settings = demo_settings(settings, config)
    reset_local_store(settings, config.output.resolve())
    write_folder_env(settings, config.output.resolve())
    say(cost_line(*_cores_in_use(), trains_base_model=not _has_base_model(settings)))
    base = ensure_base_model(settings, say)
    engine = create_store_engine(settings.database_url)
    upgrade_database(engine)
    last = PredictionRepository(engine).last_created_at()
    engine.dispose()
    clock = SimulatedClock(next_hour(max(datetime.now(UTC), last or datetime.now(UTC))))
    app = create_app(settings, RegistrySource(settings), clock=clock)
    with running_server(app) as url:
        say(f"service on {url} serving v{base}; simulated time starts "
            f"{clock.start.isoformat()}, one report window per simulated hour")
        demo = Demo(settings, config, url, clock, say)
        try:
            rows = demo.run()
        finally:
            stopped = demo.monitor.close()  # nothing the demo started outlives it
            if stopped:
                say(f"stopped {len(stopped)} retrain(s) still running at the end")
            demo.engine.dispose()
    result = DemoResult(rows, check_timeline(rows), config.output, settings, clock.start)
    result.seconds = time.monotonic() - began
    write_outputs(result, say)
    return result


def quiet_libraries() -> None:
    """The demo prints its own progress; library chatter would bury it."""
    import os
    import warnings

    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("training").setLevel(logging.INFO)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def demo_command(settings: Settings, config: DemoConfig) -> int:
    """``vidmon demo``: exit 0 when every check passed."""
    quiet_libraries()
    return 0 if run_demo(settings, config).passed else 1
