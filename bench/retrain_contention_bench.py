"""Serving while a retrain trains on the same cores: latency and throughput, in one run.

``vidmon serve`` runs in a subprocess and an async client sends ``.npy`` clips at
concurrency 8. Beside it, a training process fine-tunes the serving architecture on
synthetic batches (the retrain's inner loop: forward, backward, step) under the limits
``vidmon retrain`` puts on itself (:func:`training.resources.limit_process`):

- idle: no training;
- unlimited: as before the limits existed (every core, normal priority);
- limited: the defaults of ``RetrainSettings`` (half the cores, nice 10);

each against two servers, one paused while the other is measured:

- before: the model computes on every core (``VIDMON_SERVE__THREADS`` = the cores);
- after: the default, the cores other processes leave it (:mod:`monitor.cpu_share`).

Rounds alternate between the six, and each prints served clips/s, p50 and p99 latency
and the training process's steps/s (a retrain's own speed under each limit).

Usage: python bench/retrain_contention_bench.py [--requests 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import Server, bench_setup, load  # noqa: E402

from monitor.settings import RetrainSettings, Settings  # noqa: E402
from training.synthetic import CLASS_NAMES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def train_child(threads: int | None, nice: int, stop_file: Path) -> None:
    """Fine-tune the default architecture on random batches until ``stop_file`` exists;
    print steps per second."""
    import torch

    from training.job import model_config_for
    from training.modelfile import vidmon_network
    from training.resources import limit_process

    if threads != 0:  # 0: unlimited, as before the limits existed
        limit_process(threads, nice)
    settings = Settings()
    network = vidmon_network(model_config_for(settings.train, len(CLASS_NAMES))).network
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    batch = torch.randn(settings.train.batch_size, 3, settings.train.frames,
                        settings.train.height, settings.train.width)
    target = torch.randint(0, len(CLASS_NAMES), (settings.train.batch_size,))
    steps, started = 0, time.perf_counter()
    while not stop_file.exists():
        logits, _ = network(batch)
        loss = torch.nn.functional.cross_entropy(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    print(f"{steps / (time.perf_counter() - started):.3f}", flush=True)


def start_trainer(limits: tuple[int, int], stop: Path) -> subprocess.Popen[str]:
    """A :func:`train_child` process under ``limits`` (threads, nice)."""
    return subprocess.Popen(
        [sys.executable, __file__, "--train-child", str(limits[0]), str(limits[1]), str(stop)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--train-child", nargs=3, metavar=("THREADS", "NICE", "STOP_FILE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_child:
        threads, nice, stop = args.train_child
        train_child(int(threads) or 0, int(nice), Path(stop))
        return
    work, env, _, _, payload = bench_setup("vidmon-contention-", device="cpu")
    defaults = RetrainSettings()
    from monitor.cpu_share import allowed_cpus
    from training.resources import default_threads

    cores = len(allowed_cpus())
    retrain_threads = defaults.threads or default_threads()
    trainers = {"idle": None, "unlimited retrain (all cores, nice 0)": (0, 0),
                f"limited retrain ({retrain_threads} threads, nice {defaults.nice})":
                    (retrain_threads, defaults.nice)}
    servers = {  # each with its own store and spool: one is paused while the other serves
        f"before: model on all {cores} cores": Server(
            {**env, "VIDMON_SERVE__THREADS": str(cores),
             "VIDMON_DATABASE_URL": f"sqlite:///{work / 'fixed.db'}",
             "VIDMON_SERVE__SPOOL_PATH": str(work / "fixed-spool.jsonl")}, work, log="fixed.log"),
        "after: model on the cores left (default)": Server(
            {**env, "VIDMON_DATABASE_URL": f"sqlite:///{work / 'share.db'}",
             "VIDMON_SERVE__SPOOL_PATH": str(work / "share-spool.jsonl")}, work, log="share.log"),
    }
    phases = [(s, t) for s in servers for t in trainers]
    results: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {
        phase: [] for phase in phases}
    try:
        for server in servers.values():
            server.pause(True)
        for _ in range(args.rounds):
            for name, trainer_name in phases:
                server, limits = servers[name], trainers[trainer_name]
                server.pause(False)
                stop = work / f"stop-{time.monotonic_ns()}"
                trainer = start_trainer(limits, stop) if limits is not None else None
                time.sleep(5 if trainer is not None else 1)  # imports and the first steps
                asyncio.run(load(server.url, payload, 30, args.concurrency))  # settle
                latencies: list[float] = []
                rate, failures = asyncio.run(load(server.url, payload, args.requests,
                                                  args.concurrency, latencies))
                steps = 0.0
                if trainer is not None:
                    stop.touch()
                    steps = float(trainer.communicate(timeout=120)[0].strip() or 0)
                server.pause(True)
                if failures:
                    print(f"  {failures} requests failed in {name}, {trainer_name}")
                results[(name, trainer_name)].append(
                    (rate, float(np.percentile(latencies, 50)),
                     float(np.percentile(latencies, 99)), steps))
    finally:
        for server in servers.values():
            server.pause(False)
            server.stop()
    print(f"serving at concurrency {args.concurrency}, median of {args.rounds} alternating "
          f"rounds of {args.requests} requests ({cores} cores):")
    for name in servers:
        print(f" {name}")
        idle = float(np.median([r[0] for r in results[(name, "idle")]]))
        for trainer_name in trainers:
            rows = results[(name, trainer_name)]
            rate, p50, p99, steps = (float(np.median([r[i] for r in rows])) for i in range(4))
            training = f", training {steps:5.2f} steps/s" if steps else ""
            print(f"  {trainer_name:38s} {rate:6.1f} clips/s ({rate / idle:.2f} x idle), "
                  f"p50 {1000 * p50:6.1f} ms, p99 {1000 * p99:6.1f} ms{training}")


if __name__ == "__main__":
    main()
