"""Serving while a retrain trains on the same cores: latency and throughput, in one run.

``vidmon serve`` runs in a subprocess and an async client sends ``.npy`` clips at
concurrency 8. Beside it, a training process fine-tunes the serving architecture on
synthetic batches (the retrain's inner loop: forward, backward, step) under the limits
``vidmon retrain`` puts on itself (:func:`training.resources.limit_process`):

- idle: no training;
- unlimited: as before the limits existed (every core, normal priority);
- limited: the defaults of ``RetrainSettings`` (half the cores, nice 10).

Rounds alternate between the three, and each prints served clips/s, p50 and p99 latency
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
    from training.resources import default_threads

    phases = {"idle": None, "unlimited (all cores, nice 0)": (0, 0),
              f"limited ({defaults.threads or default_threads()} threads, nice "
              f"{defaults.nice})": (defaults.threads or default_threads(), defaults.nice)}
    server = Server(env, work)
    results: dict[str, list[tuple[float, float, float, float]]] = {p: [] for p in phases}
    try:
        for _ in range(args.rounds):
            for phase, limits in phases.items():
                stop = work / f"stop-{time.monotonic_ns()}"
                trainer = None
                if limits is not None:
                    trainer = subprocess.Popen(
                        [sys.executable, __file__, "--train-child", str(limits[0]),
                         str(limits[1]), str(stop)], cwd=ROOT, stdout=subprocess.PIPE,
                        text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
                    time.sleep(5)  # imports and the first steps
                latencies: list[float] = []
                rate, failures = asyncio.run(load(server.url, payload, args.requests,
                                                  args.concurrency, latencies))
                steps = 0.0
                if trainer is not None:
                    stop.touch()
                    steps = float(trainer.communicate(timeout=120)[0].strip() or 0)
                if failures:
                    print(f"  {failures} requests failed in phase {phase}")
                results[phase].append((rate, float(np.percentile(latencies, 50)),
                                       float(np.percentile(latencies, 99)), steps))
    finally:
        server.stop()
    print(f"serving at concurrency {args.concurrency}, median of {args.rounds} alternating "
          f"rounds of {args.requests} requests ({os.cpu_count()} cores):")
    idle = np.median([r[0] for r in results["idle"]])
    for phase, rows in results.items():
        rate, p50, p99, steps = (float(np.median([r[i] for r in rows])) for i in range(4))
        training = f", training {steps:5.2f} steps/s" if steps else ""
        print(f"  {phase:32s} {rate:6.1f} clips/s ({rate / idle:.2f} x idle), p50 "
              f"{1000 * p50:6.1f} ms, p99 {1000 * p99:6.1f} ms{training}")


if __name__ == "__main__":
    main()
