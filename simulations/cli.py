"""The ``vidmon`` console command: one subcommand per job, parsed here and run by the code it
belongs to (each body lives beside that code).

It lives in ``simulations`` because that is the one package allowed to import all the
others. Each subcommand imports its job lazily, so ``vidmon train`` never loads the serving
stack.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from monitor.settings import Settings

_DESCRIPTION = ("vidmon: a video classifier served, monitored for drift and retrained. "
                "Start with `vidmon demo`, or `vidmon train` / `vidmon register` for your "
                "own model, then `vidmon serve` and `vidmon monitor`.")


def _with_flags(settings: Settings, section: str, args: argparse.Namespace) -> Settings:
    """Settings with the flags that were given laid over one section (validated again)."""
    current = getattr(settings, section)
    flags = {key: value for key, value in vars(args).items()
             if key in type(current).model_fields and value is not None}
    updated = current.model_validate({**current.model_dump(), **flags})
    return settings.model_copy(update={section: updated})


def _train(settings: Settings, args: argparse.Namespace) -> int:
    from training.job import train_command

    return train_command(_with_flags(settings, "train", args))


def _register(settings: Settings, args: argparse.Namespace) -> int:
    from training.register import register_command

    return register_command(settings, args.model_file, args.card, args.reference_data)


def _synth(settings: Settings, args: argparse.Namespace) -> int:
    from training.synthetic import ClipSpec, synth_command

    train = settings.train
    return synth_command(args.out, args.clips_per_class or train.clips_per_class,
                         args.test_clips_per_class or train.test_clips_per_class,
                         ClipSpec(args.frames or train.frames, args.size or train.height,
                                  args.size or train.width), args.fps or train.fps,
                         train.seed if args.seed is None else args.seed, args.format,
                         settings.objects)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from serving.app import serve
    from training.registry import RegistrySource

    settings = _with_flags(settings, "serve", args)
    return serve(settings, RegistrySource(settings))


def _monitor(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.runner import monitor_command
    from training.registry import profile_loader

    settings = _with_flags(settings, "monitor", args)
    return monitor_command(settings, profile_loader(settings), args.once)


def _gc(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.retention import gc_command

    return gc_command(settings, args.dry_run)


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.closed_loop import worker_command

    return worker_command(settings)


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.objects.setup import migrate_command

    return migrate_command(settings, args.create_buckets)


def _retrain(settings: Settings, args: argparse.Namespace) -> int:
    from training.retrain import retrain_command

    return retrain_command(settings, args.decision)


def _promote(settings: Settings, args: argparse.Namespace) -> int:
    from training.registry import promote_command

    return promote_command(settings, args.version)


def _versions(settings: Settings, args: argparse.Namespace) -> int:
    from training.registry import versions_command

    return versions_command(settings, args.all, args.json)


def _archive(settings: Settings, args: argparse.Namespace) -> int:
    from training.registry import archive_command

    return archive_command(settings, args.version)


def _rollback(settings: Settings, args: argparse.Namespace) -> int:
    from training.registry import rollback_command

    return rollback_command(settings)


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from simulations.traffic import TrafficConfig, simulate_command
    from training.synthetic import ClipSpec

    train = settings.train
    return simulate_command(args.url, args.scenario, args.hours, TrafficConfig(
        requests_per_hour=args.requests_per_hour, concurrency=args.concurrency,
        spec=ClipSpec(train.frames, train.height, train.width), fps=train.fps,
        video_format=args.video_format, label_fraction=args.label_fraction,
        label_delay_hours=args.label_delay_hours, seconds_per_hour=args.seconds_per_hour,
        seed=args.seed))


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from simulations.demo import DemoConfig, demo_command, quiet_libraries

    if args.cameras is not None:
        from simulations.cameras import CamerasConfig, run_cameras

        if args.cameras < 2:
            print("vidmon demo: --cameras needs at least 2 cameras", file=sys.stderr)
            return 2
        quiet_libraries()
        output = args.output if args.output != DemoConfig().output else Path("vidmon-cameras")
        result = run_cameras(settings, CamerasConfig(
            cameras=args.cameras, camera=min(7, args.cameras), output=output,
            seed=args.seed), lambda line: print(line, flush=True))
        print("PASS" if result.passed else "FAIL", "- the camera named within two drifted "
              "windows, at most 5 % of clean camera-windows alarmed")
        return 0 if result.passed else 1

    try:
        config = DemoConfig(
            phases=tuple(p.strip() for p in args.phases.split(",") if p.strip()),
            clean_hours=args.clean_hours, recovery_hours=args.recovery_hours,
            max_phase_hours=args.max_phase_hours, requests_per_hour=args.requests_per_hour,
            label_fraction=args.label_fraction, min_labeled=args.min_labeled,
            label_budget=args.label_budget, train_clips_per_class=args.train_clips_per_class,
            train_epochs=args.train_epochs,
            retrain_epochs=args.retrain_epochs, output=args.output, seed=args.seed)
    except ValueError as exc:
        print(f"vidmon demo: {exc}", file=sys.stderr)
        return 2
    return demo_command(settings, config)


def _add_training(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a model on a dataset of video files and record it in MLflow",
        description="Train vidmon's R(2+1)D on --data (a folder per class, a CSV manifest "
                    "path,label[,split] or a Kinetics-style CSV, on disk or in an object "
                    "store as s3://bucket/prefix). Without --data a synthetic dataset is "
                    "written first (see vidmon synth).")
    p.add_argument("--data", help="dataset folder or CSV, or s3://bucket/prefix")
    p.add_argument("--card", type=Path, help="model card (YAML/JSON) for the input contract")
    p.add_argument("--epochs", type=int, help="training epochs")
    p.add_argument("--clips-per-class", type=int, help="synthetic training clips per class")
    p.add_argument("--test-clips-per-class", type=int, help="synthetic held-out clips per class")
    p.add_argument("--preset", choices=["tiny", "r2plus1d_18"], help="architecture size")
    p.add_argument("--seed", type=int, help="seed of data split and initialisation")
    p.add_argument("--shuffle-frames", action="store_true", default=None,
                   help="control run on clips with shuffled frame order (not registered)")
    p.add_argument("--no-register", dest="register_model", action="store_false", default=None,
                   help="log the run without registering a model version")
    p.set_defaults(handler=_train)

    p = subparsers.add_parser(
        "register", help="register your own PyTorch video classifier with its card",
        description="Register MODEL_FILE (TorchScript, a torch.export .pt2 program, or an "
                    "R(2+1)D state_dict in vidmon's or torchvision's layout) with its model "
                    "card and a reference profile built from labeled videos.")
    p.add_argument("model_file", type=Path, metavar="MODEL_FILE",
                   help="the network: TorchScript (.pt), torch.export (.pt2) or a state_dict")
    p.add_argument("--card", type=Path, required=True, help="model card (YAML or JSON)")
    p.add_argument("--reference-data", required=True,
                   help="labeled videos the reference profile is built from (a dataset "
                        "folder or CSV, or s3://bucket/prefix)")
    p.set_defaults(handler=_register)

    p = subparsers.add_parser(
        "synth", help="write a synthetic dataset of video files",
        description="Write labeled synthetic videos (a folder per class and a manifest) that "
                    "vidmon train --data reads. Unset sizes come from VIDMON_TRAIN__*.")
    p.add_argument("--out", required=True, help="folder to write, or s3://bucket/prefix")
    p.add_argument("--clips-per-class", type=int, help="training videos per class")
    p.add_argument("--test-clips-per-class", type=int, help="held-out videos per class")
    p.add_argument("--frames", type=int, help="frames per video")
    p.add_argument("--size", type=int, help="height and width in pixels (even)")
    p.add_argument("--fps", type=float, help="frame rate written in the container")
    p.add_argument("--seed", type=int, help="seed of the generator")
    p.add_argument("--format", default=".mp4", choices=[".mp4", ".webm", ".avi", ".mkv", ".mov"],
                   help="container (and its codec)")
    p.set_defaults(handler=_synth)

    p = subparsers.add_parser("retrain", help="train a challenger and gate it")
    p.add_argument("--decision", help="the retrain decision to carry out (default: a new, "
                                      "manual one for the serving model)")
    p.set_defaults(handler=_retrain)


def _add_operations(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="serve the champion model over HTTP")
    p.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--model-uri", help="model to serve (default models:/<name>@champion)")
    p.set_defaults(handler=_serve)

    p = subparsers.add_parser("monitor", help="run scheduled drift reports")
    p.add_argument("--interval-s", type=int, help="seconds between reports")
    p.add_argument("--cron", help="crontab schedule instead of an interval")
    p.add_argument("--window-minutes", type=float, help="report on the last N minutes")
    p.add_argument("--once", action="store_true", help="report on the last window and exit")
    p.set_defaults(handler=_monitor)

    p = subparsers.add_parser(
        "gc", help="apply the retention settings once: old predictions, clips, report pages",
        description="Delete production predictions older than VIDMON_RETENTION__PREDICTION_DAYS "
                    "that a report has covered, release clips past their age or over the "
                    "clip store's size limit, and prune old report pages and their Evidently "
                    "workspace copies, in small batches. "
                    "The monitor runs the same every VIDMON_RETENTION__INTERVAL_S seconds.")
    p.add_argument("--dry-run", action="store_true",
                   help="count what would be deleted and delete nothing (the store and clip "
                        "folder read are printed first)")
    p.set_defaults(handler=_gc)

    p = subparsers.add_parser(
        "worker", help="run the retrains monitors decide (a cluster: VIDMON_RETRAIN__AUTO_START"
                       "=false on the monitors)",
        description="Claim due retrain decisions from the store and run each as `vidmon "
                    "retrain --decision ID`, holding it by heartbeat; a worker that dies is "
                    "taken over after VIDMON_RETRAIN__LEASE_S. SIGTERM gives the retrain back.")
    p.set_defaults(handler=_worker)

    p = subparsers.add_parser(
        "migrate", help="make the store's schema current and check the object-store buckets",
        description="Upgrade the store to the current schema and check that every s3:// "
                    "location in the settings answers; run once before the services (a "
                    "Kubernetes Job, a compose one-shot). Services also migrate at start.")
    p.add_argument("--create-buckets", action="store_true",
                   help="create a bucket that does not exist yet")
    p.set_defaults(handler=_migrate)

    p = subparsers.add_parser("promote", help="make a registered version the champion")
    p.add_argument("version", help="model version to serve")
    p.set_defaults(handler=_promote)
    p = subparsers.add_parser("rollback", help="move the champion back to the previous version")
    p.set_defaults(handler=_rollback)
    p = subparsers.add_parser(
        "versions", help="list registered versions: origin, aliases, reference accuracy")
    p.add_argument("--all", action="store_true", help="archived versions too")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(handler=_versions)
    p = subparsers.add_parser(
        "archive", help="archive a version registered by mistake (kept in MLflow, never "
                        "served, hidden from the dashboard)")
    p.add_argument("version", help="model version to archive")
    p.set_defaults(handler=_archive)
    p = subparsers.add_parser(
        "hash-key", help="print the hash a key is configured by (VIDMON_AUTH__*_KEYS)",
        description="Reads a key from standard input (its first line) and prints "
                    "sha256:<hex>, the form VIDMON_AUTH__CLIENT_KEYS, LABELER_KEYS and "
                    "ADMIN_KEYS take; with --new, makes a random key and prints it and its "
                    "hash. The key itself is never stored.")
    p.add_argument("--new", action="store_true", help="make a random key")
    p.set_defaults(handler=_hash_key)


def _hash_key(settings: Settings, args: argparse.Namespace) -> int:
    import secrets

    from serving.auth import hash_key

    if args.new:
        key = secrets.token_urlsafe(32)
        print(f"key:  {key}\nhash: {hash_key(key)}")
        return 0
    key = sys.stdin.readline().rstrip("\r\n")
    if not key:
        print("vidmon hash-key: no key on standard input (or use --new)", file=sys.stderr)
        return 2
    print(hash_key(key))
    return 0


def _add_simulations(subparsers: argparse._SubParsersAction) -> None:
    from simulations.demo import DemoConfig
    from simulations.scenarios import SCENARIOS
    from simulations.traffic import CONTENT_TYPES, TrafficConfig

    d = TrafficConfig()
    p = subparsers.add_parser(
        "simulate", help="send drifting video traffic and late labels to a running service",
        description="Simulated hours of encoded video traffic against --url. A scenario is "
                    "NAME[@ONSET[+RAMP]] in simulated hours (e.g. lighting@6+2); repeat "
                    "--scenario to compose. Each line is one hour.")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the service")
    p.add_argument("--scenario", action="append", default=[], help="drift scenario")
    p.add_argument("--hours", type=int, default=24, help="simulated hours to send")
    p.add_argument("--requests-per-hour", type=int, default=d.requests_per_hour,
                   help="videos sent per simulated hour")
    p.add_argument("--concurrency", type=int, default=d.concurrency,
                   help="requests in flight at once")
    p.add_argument("--seconds-per-hour", type=float, default=d.seconds_per_hour,
                   help="pace an hour over this many real seconds (0: as fast as it answers)")
    p.add_argument("--label-fraction", type=float, default=d.label_fraction,
                   help="share of predictions labeled later through POST /v1/feedback")
    p.add_argument("--label-delay-hours", type=float, default=d.label_delay_hours,
                   help="simulated hours before a label comes back")
    p.add_argument("--format", dest="video_format", choices=sorted(CONTENT_TYPES),
                   default=d.video_format, help="container of the videos sent")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the traffic")
    p.set_defaults(handler=_simulate)

    c = DemoConfig()
    p = subparsers.add_parser(
        "demo", help="the closed loop end to end: train, serve, drift, retrain, recover",
        description="Trains a model if none is registered, serves it, sends drifting video "
                    "traffic on simulated time and shows the monitor catch the drift and a "
                    "retrained model take over. Everything lands in --output.")
    p.add_argument("--phases", default=",".join(c.phases),
                   help="drift scenarios in order, comma-separated, from: "
                        + ", ".join(SCENARIOS))
    p.add_argument("--clean-hours", type=int, default=c.clean_hours,
                   help="hours of clean traffic before the first phase")
    p.add_argument("--recovery-hours", type=int, default=c.recovery_hours,
                   help="hours a promoted model serves before the next phase")
    p.add_argument("--max-phase-hours", type=int, default=c.max_phase_hours,
                   help="hours a phase runs without a promotion before the next one")
    p.add_argument("--requests-per-hour", type=int, default=c.requests_per_hour,
                   help="videos sent per simulated hour")
    p.add_argument("--label-fraction", type=float, default=c.label_fraction,
                   help="share of predictions labeled uniformly, a quarter hour later")
    p.add_argument("--min-labeled", type=int, default=c.min_labeled,
                   help="labeled clips since accuracy fell before a retrain")
    p.add_argument("--label-budget", type=float, default=None,
                   help="label this share of each hour's traffic through the labeling queue "
                        "(importance sampling) instead of --label-fraction uniformly; "
                        "--min-labeled then defaults to 80%% of ten hours' budget")
    p.add_argument("--train-clips-per-class", type=int, default=c.train_clips_per_class,
                   help="synthetic training videos per class of the first model")
    p.add_argument("--train-epochs", type=int, default=c.train_epochs,
                   help="epochs of the first model (trained once, kept in MLflow)")
    p.add_argument("--retrain-epochs", type=int, default=c.retrain_epochs,
                   help="epochs of each retrain")
    p.add_argument("--output", type=Path, default=c.output, help="folder for everything")
    p.add_argument("--seed", type=int, default=c.seed, help="seed of the traffic")
    p.add_argument("--cameras", type=int, default=None, metavar="N",
                   help="instead of the phases: N cameras send traffic and one goes out of "
                        "focus; the pooled window beside the per-source report (output in "
                        "vidmon-cameras unless --output says)")
    p.set_defaults(handler=_demo)


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows an option's default when it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (action.default is None or action.default is False
                or action.default == argparse.SUPPRESS or "default" in text):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """Subcommand parsers show each option's default beside its help."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(**kwargs)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="vidmon", description=_DESCRIPTION)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                       parser_class=_Parser)
    _add_training(subparsers)
    _add_operations(subparsers)
    _add_simulations(subparsers)
    _add_debug(parser)
    for subparser in subparsers.choices.values():
        _add_debug(subparser)
    return parser


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` before or after the subcommand: tracebacks instead of one-line errors."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of a failure instead of one line")


# Commands that never talk to MLflow; the others check its server answers before they
# start. migrate runs before the server exists (compose, the Kubernetes Job): MLflow's
# artifacts live in the buckets it creates.
_WITHOUT_MLFLOW = ("synth", "simulate", "gc", "migrate", "hash-key")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vidmon`` command. A failure the user can fix is one line on
    stderr and exit 2 (see :mod:`simulations.cli_errors`); ``--debug`` re-raises it."""
    from simulations.cli_errors import explain

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = build_parser().parse_args(argv)
    settings: Settings | None = None
    try:
        settings = Settings()
        logging.basicConfig(level=settings.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per plugin otherwise
        if args.command not in _WITHOUT_MLFLOW:
            from training.tracking import check_tracking_server

            check_tracking_server(settings.mlflow_tracking_uri)
        return args.handler(settings, args)
    except KeyboardInterrupt:
        print(f"vidmon {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        line = None if getattr(args, "debug", False) else explain(exc, settings)
        if line is None:
            raise
        print(f"vidmon {args.command}: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
