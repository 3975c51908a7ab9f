"""Twenty cameras, one goes out of focus: the pooled window against the per-source report.

Runs the real service (encoded videos over HTTP, every request naming its camera) and the
report job on a simulated clock: ``--clean-hours`` hours of clean traffic from
``--cameras`` cameras, then ``--drift-hours`` in which one camera's lens is blurred. Each
window is one report; a line per window shows the pooled verdict and sharpness test beside
the sources the per-source tests named. At the end: the detection delay (windows after the
onset until the camera is named), how many of its drifted windows named it, the pooled
verdict on those windows, and the false alarms (clean camera-windows named) over every
window.

    python bench/source_drift_bench.py                 # 20 cameras, 8 clean + 12 hours
    python bench/source_drift_bench.py --cameras 50 --per-camera 30

The first run trains the demo's base model into ``--output`` (about 2 minutes on 2
cores), as ``vidmon demo`` does; later runs reuse it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import warnings
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=20)
    parser.add_argument("--per-camera", type=int, default=25,
                        help="requests per camera per simulated hour")
    parser.add_argument("--clean-hours", type=int, default=8)
    parser.add_argument("--drift-hours", type=int, default=12)
    parser.add_argument("--scenario", default="blur", help="what happens to the one camera")
    parser.add_argument("--camera", type=int, default=7, help="which camera it happens to")
    parser.add_argument("--output", type=Path, default=Path("vidmon-sources-bench"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    args.output.mkdir(parents=True, exist_ok=True)
    config = DemoConfig(phases=(), output=args.output, seed=args.seed)
    settings = demo_settings(Settings(), config)
    settings = settings.model_copy(update={"monitor": settings.monitor.model_copy(
        update={"min_rows": min(20, args.per_camera)})})
    reset_local_store(settings, args.output.resolve())
    ensure_base_model(settings, print)
    engine = create_store_engine(settings.database_url)
    upgrade_database(engine)
    predictions, reports = PredictionRepository(engine), ReportRepository(engine)
    clock = SimulatedClock(next_hour(datetime.now(UTC)))
    load_profile = registry.profile_loader(settings)
    bad = f"camera-{args.camera}"
    train = settings.train
    rows = []
    with running_server(create_app(settings, registry.RegistrySource(settings),
                                   clock=clock)) as url:
        traffic = TrafficSimulator(url, Scenario(), TrafficConfig(
            requests_per_hour=args.cameras * args.per_camera, concurrency=8,
            spec=ClipSpec(train.frames, train.height, train.width), fps=train.fps,
            label_fraction=0.0, sources=args.cameras, seed=args.seed))
        print(f"{args.cameras} cameras x {args.per_camera} videos an hour; {bad} gets "
              f"{args.scenario} from hour {args.clean_hours}")
        print("hour  phase  rows  verdict         pooled sharpness p  effect  named sources")
        for hour in range(args.clean_hours + args.drift_hours):
            if hour == args.clean_hours:
                traffic.source_scenarios = {bad: build(args.scenario, onset=hour)}
            sent = asyncio.run(traffic.run_hour(float(hour)))
            clock.set_hour(hour + 1)
            outcome = run_report_job(settings.monitor, predictions, reports, load_profile,
                                     now=clock())
            summary = (reports.get(outcome.report_id) or {}).get("summary") or {}
            sharp = (summary.get("column_drift") or {}).get("sharpness") or {}
            tested = [s for s, r in (summary.get("source_drift") or {}).items()
                      if r["status"] in ("drifted", "no_drift")]
            named = summary.get("drifted_sources") or []
            phase = "clean" if hour < args.clean_hours else args.scenario
            rows.append((hour, phase, bool(sharp.get("drifted")), tested, named))
            print(f"{hour:>4}  {phase:<5}  {len(sent.sent) - sent.failures:>4}  "
                  f"{summary.get('verdict', '-'):<14}  {sharp.get('score') or float('nan'):>18.3g}"
                  f"  {sharp.get('effect') or float('nan'):>6.2f}  "
                  f"{', '.join(named) or '-'} (of {len(tested)} tested)", flush=True)
    engine.dispose()

    drifted = [r for r in rows if r[1] != "clean"]
    caught = [r for r in drifted if bad in r[4]]
    delay = next((i for i, r in enumerate(drifted) if bad in r[4]), None)
    false_alarms = sum(len([s for s in r[4] if s != bad or r[1] == "clean"]) for r in rows)
    clean_tests = sum(len([s for s in r[3] if s != bad or r[1] == "clean"]) for r in rows)
    pooled = sum(r[2] for r in drifted)
    print(f"\n{bad} named {len(caught)} of {len(drifted)} drifted windows; first "
          + ("never" if delay is None else f"in drifted window {delay + 1}")
          + f"; the pooled window's sharpness test flagged {pooled} of {len(drifted)}; "
          "false alarms: "
          f"{false_alarms} of {clean_tests} clean camera-windows tested, over {len(rows)} "
          "windows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
