"""The cameras scenario: many cameras, one goes wrong; the pooled window beside the
per-source report.

Runs the real service (encoded videos over HTTP, every request naming its camera) and the
report job on a simulated clock: ``clean_hours`` of clean traffic from ``cameras`` cameras,
then ``drift_hours`` in which one camera gets ``scenario`` (blur: its lens goes out of
focus). Each hour is one report; a line per window shows the pooled verdict and sharpness
test beside the sources the per-source tests named. At the end: the detection delay
(windows after the onset until the camera is named), how many of its drifted windows
named it, the pooled verdict on those windows, and the false alarms (clean camera-windows
named) over every window. ``vidmon demo --cameras 20`` and ``bench/source_drift_bench.py``
run it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from monitor.job import run_report_job
from monitor.settings import Settings
from monitor.store import PredictionRepository, create_store_engine, upgrade_database
from monitor.store.reports import ReportRepository
from serving.app import create_app
from serving.background import running_server
from simulations.clock import SimulatedClock, next_hour
from simulations.demo import DemoConfig, demo_settings, ensure_base_model, reset_local_store
from simulations.scenarios import Scenario, build
from simulations.traffic import TrafficConfig, TrafficSimulator
from training import registry
from training.synthetic import ClipSpec


@dataclass(frozen=True)
class CamerasConfig:
    """The scenario's shape."""

    cameras: int = 20
    per_camera: int = 25  # requests per camera per simulated hour
    clean_hours: int = 8
    drift_hours: int = 12
    scenario: str = "blur"
    camera: int = 7  # which camera it happens to
    output: Path = Path("vidmon-cameras")
    seed: int = 0

    @property
    def bad(self) -> str:
        """The source id of the camera that goes wrong."""
        return f"camera-{self.camera}"


@dataclass(frozen=True)
class CameraWindow:
    """One hour's report: the pooled sharpness test and the per-source verdicts."""

    hour: int
    phase: str
    pooled_drifted: bool
    tested: list[str]
    named: list[str]


@dataclass
class CamerasResult:
    """Every window, and what they add up to."""

    config: CamerasConfig
    windows: list[CameraWindow] = field(default_factory=list)

    @property
    def drifted(self) -> list[CameraWindow]:
        return [w for w in self.windows if w.phase != "clean"]

    @property
    def caught(self) -> int:
        """Drifted windows that named the bad camera."""
        return sum(self.config.bad in w.named for w in self.drifted)

    @property
    def delay(self) -> int | None:
        """Drifted windows until the bad camera is first named (1: at once); None: never."""
        return next((i + 1 for i, w in enumerate(self.drifted) if self.config.bad in w.named),
                    None)

    @property
    def false_alarms(self) -> tuple[int, int]:
        """(clean camera-windows named, clean camera-windows tested)."""
        def clean(w: CameraWindow, names: list[str]) -> list[str]:
            return [s for s in names if s != self.config.bad or w.phase == "clean"]
        return (sum(len(clean(w, w.named)) for w in self.windows),
                sum(len(clean(w, w.tested)) for w in self.windows))

    @property
    def passed(self) -> bool:
        """The camera was named within two drifted windows, and at most 5 % of the clean
        camera-windows raised an alarm."""
        named, tested = self.false_alarms
        return self.delay is not None and self.delay <= 2 and named <= 0.05 * max(tested, 1)

    def summary(self) -> str:
        """One paragraph of the outcome."""
        named, tested = self.false_alarms
        pooled = sum(w.pooled_drifted for w in self.drifted)
        bad, drifted = self.config.bad, len(self.drifted)
        return (f"{bad} named in {self.caught} of {drifted} drifted windows, first "
                + ("never" if self.delay is None else f"in drifted window {self.delay}")
                + f" (of {self.config.cameras} cameras); the pooled window's sharpness test "
                f"flagged {pooled} of {drifted}; false alarms: {named} of {tested} clean "
                f"camera-windows tested, over {len(self.windows)} windows")


def run_cameras(settings: Settings, config: CamerasConfig,
                say: Callable[[str], None] = print) -> CamerasResult:
    """Run the scenario into ``config.output``; every window is printed as it closes."""
    config.output.mkdir(parents=True, exist_ok=True)
    settings = demo_settings(settings, DemoConfig(phases=(), output=config.output,
                                                  seed=config.seed))
    settings = settings.model_copy(update={"monitor": settings.monitor.model_copy(
        update={"min_rows": min(20, config.per_camera)})})
    reset_local_store(settings, config.output.resolve())
    ensure_base_model(settings, say)
    engine = create_store_engine(settings.database_url)
    upgrade_database(engine)
    predictions, reports = PredictionRepository(engine), ReportRepository(engine)
    clock = SimulatedClock(next_hour(datetime.now(UTC)))
    load_profile = registry.profile_loader(settings)
    result = CamerasResult(config)
    train = settings.train
    try:
        with running_server(create_app(settings, registry.RegistrySource(settings),
                                       clock=clock)) as url:
            traffic = TrafficSimulator(url, Scenario(), TrafficConfig(
                requests_per_hour=config.cameras * config.per_camera, concurrency=8,
                spec=ClipSpec(train.frames, train.height, train.width), fps=train.fps,
                label_fraction=0.0, sources=config.cameras, seed=config.seed))
            say(f"{config.cameras} cameras x {config.per_camera} videos an hour; "
                f"{config.bad} gets {config.scenario} from hour {config.clean_hours}")
            say("hour  phase  rows  pooled verdict  pooled sharpness p  effect  "
                "per-source report: sources named")
            for hour in range(config.clean_hours + config.drift_hours):
                if hour == config.clean_hours:
                    traffic.source_scenarios = {config.bad: build(config.scenario, onset=hour)}
                sent = asyncio.run(traffic.run_hour(float(hour)))
                clock.set_hour(hour + 1)
                outcome = run_report_job(settings.monitor, predictions, reports, load_profile,
                                         now=clock())
                summary = (reports.get(outcome.report_id) or {}).get("summary") or {}
                sharp = (summary.get("column_drift") or {}).get("sharpness") or {}
                tested = [s for s, r in (summary.get("source_drift") or {}).items()
                          if r["status"] in ("drifted", "no_drift")]
                named = summary.get("drifted_sources") or []
                phase = "clean" if hour < config.clean_hours else config.scenario
                result.windows.append(CameraWindow(hour, phase, bool(sharp.get("drifted")),
                                                   tested, named))
                say(f"{hour:>4}  {phase:<5}  {len(sent.sent) - sent.failures:>4}  "
                    f"{summary.get('verdict', '-'):<14}  "
                    f"{sharp.get('score') or float('nan'):>18.3g}  "
                    f"{sharp.get('effect') or float('nan'):>6.2f}  "
                    f"{', '.join(named) or '-'} (of {len(tested)} tested)")
    finally:
        engine.dispose()
    say("\n" + result.summary())
    return result
