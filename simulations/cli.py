"""The ``vidmon`` console command: one subcommand per job.

It lives in ``simulations`` because that is the one package allowed to import all the
others. Each subcommand imports its job lazily, so ``vidmon train`` never loads the serving
stack.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from monitor.settings import Settings


def _with_flags(settings: Settings, section: str, args: argparse.Namespace) -> Settings:
    """Settings with the flags that were given laid over one section (validated again)."""
    current = getattr(settings, section)
    flags = {key: value for key, value in vars(args).items()
             if key in type(current).model_fields and value is not None}
    updated = current.model_validate({**current.model_dump(), **flags})
    return settings.model_copy(update={section: updated})


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a model and record it in MLflow")
    p.add_argument("--epochs", type=int, help="training epochs")
    p.add_argument("--clips-per-class", type=int, help="training clips per class")
    p.add_argument("--test-clips-per-class", type=int, help="held-out clips per class")
    p.add_argument("--preset", choices=["tiny", "r2plus1d_18"], help="architecture size")
    p.add_argument("--seed", type=int, help="seed of data and initialisation")
    p.add_argument("--shuffle-frames", action="store_true", default=None,
                   help="control run on clips with shuffled frame order (not registered)")
    p.add_argument("--no-register", dest="register_model", action="store_false", default=None,
                   help="log the run without registering a model version")
    p.set_defaults(handler=_train)


def _train(settings: Settings, args: argparse.Namespace) -> int:
    from training.job import run_training

    outcome = run_training(_with_flags(settings, "train", args))
    print(json.dumps(asdict(outcome), indent=2))
    return 0


def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="serve the champion model over HTTP")
    p.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--model-uri", help="model to serve (default models:/<name>@champion)")
    p.set_defaults(handler=_serve)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from serving.app import create_app
    from training.registry import RegistrySource

    settings = _with_flags(settings, "serve", args)
    serve = settings.serve
    app = create_app(settings, RegistrySource(settings))
    uvicorn.run(app, host=serve.host, port=serve.port, log_level=settings.log_level.lower(),
                timeout_graceful_shutdown=30)
    return 0


def _add_monitor(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("monitor", help="run scheduled drift reports")
    p.add_argument("--interval-s", type=int, help="seconds between reports")
    p.add_argument("--cron", help="crontab schedule instead of an interval")
    p.add_argument("--window-minutes", type=float, help="report on the last N minutes")
    p.add_argument("--once", action="store_true", help="report on the last window and exit")
    p.set_defaults(handler=_monitor)


def _monitor(settings: Settings, args: argparse.Namespace) -> int:
    import signal

    from monitor.runner import build_monitor
    from training.registry import profile_loader

    settings = _with_flags(settings, "monitor", args)
    monitor = build_monitor(
        settings, profile_loader(settings),
        on_outcome=lambda outcome: print(json.dumps(asdict(outcome), default=str), flush=True))
    if args.once:
        monitor.run_once()
        return 0
    signal.signal(signal.SIGTERM, lambda *_: monitor.stop())
    signal.signal(signal.SIGINT, lambda *_: monitor.stop())
    monitor.serve_forever()
    return 0


def _add_retrain(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("retrain", help="train a challenger and gate it")
    p.add_argument("--decision", help="the retrain decision to carry out (default: a new, "
                                      "manual one for the serving model)")
    p.set_defaults(handler=_retrain)


def _retrain(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.retrain_policy import RetrainDecision
    from monitor.store import create_store_engine, upgrade_database
    from monitor.store.retrains import RetrainRepository
    from training.registry import RegistrySource
    from training.retrain import run_retrain

    decision_id = args.decision
    if decision_id is None:
        engine = create_store_engine(settings.database_url)
        upgrade_database(engine)
        version = RegistrySource(settings).version_of(settings.model_uri)
        decision_id = RetrainRepository(engine).record(
            RetrainDecision(True, ["requested with vidmon retrain"], []), settings.model_name,
            version)
    outcome = run_retrain(settings, decision_id)
    print(json.dumps(asdict(outcome), default=str))
    return 0


def _add_registry_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("promote", help="make a registered version the champion")
    p.add_argument("version", help="model version to serve")
    p.set_defaults(handler=_promote)
    p = subparsers.add_parser("rollback", help="move the champion back to the previous version")
    p.set_defaults(handler=_rollback)


def _promote(settings: Settings, args: argparse.Namespace) -> int:
    from training.registry import RegistrySource

    previous = RegistrySource(settings).promote(args.version)
    print(json.dumps({"champion": args.version, "previous_champion": previous}))
    return 0


def _rollback(settings: Settings, args: argparse.Namespace) -> int:
    from training.registry import RegistrySource

    try:
        moved_from, moved_to = RegistrySource(settings).rollback()
    except ValueError as exc:
        print(f"vidmon rollback: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"rolled_back_from": moved_from, "champion": moved_to}))
    return 0


def _add_simulate(subparsers: argparse._SubParsersAction) -> None:
    from simulations.traffic import CONTENT_TYPES, TrafficConfig

    d = TrafficConfig()
    p = subparsers.add_parser(
        "simulate", help="send drifting video traffic and late labels to a running service",
        description="Simulated hours of encoded video traffic against --url. A scenario is "
                    "NAME[@ONSET[+RAMP]] in simulated hours (e.g. lighting@6+2); repeat "
                    "--scenario to compose. Each line is one hour.")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the service")
    p.add_argument("--scenario", action="append", default=[], help="drift scenario")
    p.add_argument("--hours", type=int, default=24)
    p.add_argument("--requests-per-hour", type=int, default=d.requests_per_hour)
    p.add_argument("--concurrency", type=int, default=d.concurrency)
    p.add_argument("--seconds-per-hour", type=float, default=d.seconds_per_hour,
                   help="pace an hour over this many real seconds (0: as fast as it answers)")
    p.add_argument("--label-fraction", type=float, default=d.label_fraction)
    p.add_argument("--label-delay-hours", type=float, default=d.label_delay_hours)
    p.add_argument("--format", dest="video_format", choices=sorted(CONTENT_TYPES),
                   default=d.video_format)
    p.add_argument("--seed", type=int, default=d.seed)
    p.set_defaults(handler=_simulate)


def parse_scenario(text: str):  # type: ignore[no-untyped-def]
    """``NAME[@ONSET[+RAMP]]`` as a scenario."""
    from simulations.scenarios import build

    name, _, timing = text.partition("@")
    onset, _, ramp = timing.partition("+")
    return build(name, onset=float(onset or 0), ramp=float(ramp or 0))


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from simulations.scenarios import compose
    from simulations.traffic import TrafficConfig, TrafficSimulator
    from training.synthetic import ClipSpec

    try:
        parts = [parse_scenario(text) for text in args.scenario]
    except ValueError as exc:
        print(f"vidmon simulate: {exc}", file=sys.stderr)
        return 2
    train = settings.train
    simulator = TrafficSimulator(args.url, compose(*parts), TrafficConfig(
        requests_per_hour=args.requests_per_hour, concurrency=args.concurrency,
        spec=ClipSpec(train.frames, train.height, train.width), fps=train.fps,
        video_format=args.video_format, label_fraction=args.label_fraction,
        label_delay_hours=args.label_delay_hours, seconds_per_hour=args.seconds_per_hour,
        seed=args.seed))
    failures = 0
    for hour in range(args.hours):
        result = asyncio.run(simulator.run_hour(float(hour)))
        failures += result.failures
        versions = sorted({s.model_version for s in result.sent if s.model_version})
        print(json.dumps({"hour": hour, "sent": len(result.sent), "failures": result.failures,
                          "accuracy": round(result.accuracy, 4), "labels_sent":
                          result.labels_sent, "model_versions": versions}), flush=True)
    return 1 if failures else 0


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    from simulations.demo import DemoConfig

    d = DemoConfig()
    p = subparsers.add_parser(
        "demo", help="the closed loop end to end: train, serve, drift, retrain, recover",
        description="Trains a model if none is registered, serves it, sends drifting video "
                    "traffic on simulated time and shows the monitor catch the drift and a "
                    "retrained model take over. Everything lands in --output.")
    p.add_argument("--phases", default=",".join(d.phases),
                   help=f"drift scenarios in order, comma-separated (default {','.join(d.phases)})")
    p.add_argument("--clean-hours", type=int, default=d.clean_hours)
    p.add_argument("--recovery-hours", type=int, default=d.recovery_hours,
                   help="hours a promoted model serves before the next phase")
    p.add_argument("--max-phase-hours", type=int, default=d.max_phase_hours)
    p.add_argument("--requests-per-hour", type=int, default=d.requests_per_hour)
    p.add_argument("--label-fraction", type=float, default=d.label_fraction)
    p.add_argument("--min-labeled", type=int, default=d.min_labeled,
                   help="labeled clips since the drift began before a retrain")
    p.add_argument("--train-clips-per-class", type=int, default=d.train_clips_per_class)
    p.add_argument("--train-epochs", type=int, default=d.train_epochs)
    p.add_argument("--retrain-epochs", type=int, default=d.retrain_epochs)
    p.add_argument("--output", type=Path, default=d.output, help="folder for everything")
    p.add_argument("--seed", type=int, default=d.seed)
    p.set_defaults(handler=_demo)


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    import warnings

    from simulations.demo import DemoConfig, run_demo

    try:
        config = DemoConfig(
            phases=tuple(p.strip() for p in args.phases.split(",") if p.strip()),
            clean_hours=args.clean_hours, recovery_hours=args.recovery_hours,
            max_phase_hours=args.max_phase_hours, requests_per_hour=args.requests_per_hour,
            label_fraction=args.label_fraction, min_labeled=args.min_labeled,
            train_clips_per_class=args.train_clips_per_class, train_epochs=args.train_epochs,
            retrain_epochs=args.retrain_epochs, output=args.output, seed=args.seed)
    except ValueError as exc:
        print(f"vidmon demo: {exc}", file=sys.stderr)
        return 2
    # The demo prints its own progress; library chatter would bury it.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("training").setLevel(logging.INFO)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    result = run_demo(settings, config)
    return 0 if result.passed else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="vidmon", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_train(subparsers)
    _add_serve(subparsers)
    _add_monitor(subparsers)
    _add_registry_commands(subparsers)
    _add_retrain(subparsers)
    _add_simulate(subparsers)
    _add_demo(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vidmon`` command."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = build_parser().parse_args(argv)
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per plugin otherwise
    return args.handler(settings, args)


if __name__ == "__main__":
    sys.exit(main())
