"""Served vs raw throughput, logging on vs off, and lossless logging under load.

Measured in one run on this machine's device:
- raw: the network's forward pass on batches of ``--batch-size`` clips (no HTTP, no
  decoding, no features, no logging);
- served: ``vidmon serve`` in a subprocess, an async httpx client sending raw ``.npy``
  clips at concurrency 1, 8 and 32; clips/s divided by raw gives the served/raw ratio;
- logging: the same load with ``log_predictions`` on and off;
- loss: ``--count-requests`` requests, then a graceful shutdown, then the row count.

Usage: python bench/serve_bench.py [--requests 600] [--rounds 3] [--count-requests 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import mlflow
import numpy as np
import torch

from monitor.settings import Settings
from monitor.store import PredictionRepository, create_store_engine
from monitor.preprocess import to_model_input
from monitor.runtime import autocast_for, resolve_device
from training import flavor, registry, tracking
from training.job import model_config_for, training_card
from training.modelfile import vidmon_network
from training.synthetic import CLASS_NAMES, ClipSpec, generate_clip

ROOT = Path(__file__).resolve().parents[1]


def register_model(settings: Settings) -> None:
    """A model of the default architecture (weights do not change the throughput)."""
    torch.manual_seed(0)
    card = training_card(settings.train, CLASS_NAMES)
    loaded = vidmon_network(model_config_for(settings.train, len(CLASS_NAMES)))
    experiment = tracking.configure_mlflow(settings)
    with mlflow.start_run(experiment_id=experiment):
        info = flavor.log_model(loaded, card, settings.model_name,
                                loaded.architecture.embedding_dim)
    registry.ensure_champion(mlflow.MlflowClient(), settings.model_name,
                             str(info.registered_model_version))


def bench_setup(prefix: str, **serve: str) -> tuple[Path, dict[str, str], Settings, np.ndarray,
                                                   bytes]:
    """A temp folder with an MLflow store and a vidmon store, a model of the default
    architecture registered, the ``VIDMON_*`` environment servers get (``serve``: extra
    ``VIDMON_SERVE__*`` values by lower-case name, also set in this process), and one
    synthetic clip with its ``.npy`` bytes."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    work = Path(tempfile.mkdtemp(prefix=prefix))
    env = {
        "VIDMON_MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "VIDMON_MLFLOW_ARTIFACTS_DIR": str(work / "mlartifacts"),
        "VIDMON_DATABASE_URL": f"sqlite:///{work / 'vidmon.db'}",
        "VIDMON_SERVE__CLIP_SAMPLE_RATE": "0",
        "VIDMON_SERVE__SPOOL_PATH": str(work / "spool.jsonl"),
        "VIDMON_LOG_LEVEL": "WARNING",
        **{f"VIDMON_SERVE__{name.upper()}": value for name, value in serve.items()},
    }
    os.environ.update(env)
    settings = Settings()
    register_model(settings)
    train = settings.train
    clip = generate_clip(0, np.random.default_rng(0), ClipSpec(train.frames, train.height,
                                                                train.width))
    buffer = io.BytesIO()
    np.save(buffer, clip)
    return work, env, settings, clip, buffer.getvalue()


def raw_clips_per_second(settings: Settings, clip: np.ndarray, batch: int, seconds: float) -> float:
    """Forward passes of full batches, no HTTP, no decoding."""
    device = resolve_device(settings.serve.device)
    runtime = registry.RegistrySource(settings).load(settings.model_uri, str(device))
    pixels = torch.from_numpy(np.stack([clip] * batch))

    @torch.inference_mode()
    def forward() -> None:
        with autocast_for(device):
            runtime.network(to_model_input(pixels.to(device), runtime.card))
        if device.type == "cuda":
            torch.cuda.synchronize()

    forward()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        forward()
        done += batch
    return done / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``vidmon serve`` as a subprocess on 127.0.0.1."""

    def __init__(self, env: dict[str, str], workdir: Path, command: list[str] | None = None,
                 log: str = "server.log", ready_path: str = "/readyz") -> None:
        """``command`` (default ``vidmon serve``) gets ``--port N`` appended; the server is
        up once ``ready_path`` answers 200."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = command or [sys.executable, "-m", "simulations.cli", "serve"]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port)],
            cwd=workdir, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL, stderr=open(workdir / log, "ab"),
            start_new_session=True)  # its own process group, to pause it whole
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}{ready_path}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; see {workdir / log}")
            time.sleep(0.2)

    def pause(self, paused: bool) -> None:
        """Stop (SIGSTOP) or resume (SIGCONT) the server and its child processes: an idle
        server that polls (LitServe's workers spin on their queue) must not take CPU from
        the one being measured."""
        os.killpg(self.process.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def stop(self) -> None:
        """Graceful shutdown (SIGINT): uvicorn drains, the writer flushes. Then whatever
        the server started and left behind in its process group is stopped too (LitServe's
        spawned workers outlive their parent and would spin on a core for ever). A server
        that does not stop within 2 minutes is killed with a warning, so the numbers
        measured before it still print (LitServe 0.2.19 now and then ignores SIGINT)."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            print(f"warning: {' '.join(self.process.args)} did not stop on SIGINT in 120 s; "
                  "killed", file=sys.stderr)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:  # nothing was left
            pass


async def load(url: str, payload: bytes, requests: int, concurrency: int,
               latencies: list[float] | None = None, raw_body: bool = False
               ) -> tuple[float, int]:
    """Send ``requests`` predictions with ``concurrency`` in flight; clips/s and failures
    (each request's seconds appended to ``latencies`` when given). The clip goes as a
    multipart file, or with ``raw_body`` as the request body itself."""
    if raw_body:
        upload = {"content": payload, "headers": {"content-type": "application/x-npy"}}
    else:
        upload = {"files": {"file": ("c.npy", payload, "application/x-npy")}}
    remaining = iter(range(requests))
    failures = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def worker() -> None:
            nonlocal failures
            for _ in remaining:
                sent = time.perf_counter()
                response = await client.post("/v1/predict", **upload)
                if latencies is not None:
                    latencies.append(time.perf_counter() - sent)
                failures += response.status_code != 200
        for _ in range(2):  # warm-up
            await client.post("/v1/predict", **upload)
        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        return requests / (time.perf_counter() - started), failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="requests per load level")
    parser.add_argument("--count-requests", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating on/off rounds")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    work, env, settings, clip, payload = bench_setup(
        "vidmon-bench-", device=args.device, max_batch_size=str(args.batch_size))

    raw = raw_clips_per_second(settings, clip, args.batch_size, seconds=10)
    print(f"raw forward, batch {args.batch_size}: {raw:.1f} clips/s "
          f"(device {resolve_device(args.device)}, {torch.get_num_threads()} threads)")

    # Both servers run side by side (an idle one costs nothing) and the rounds alternate,
    # so drift in what else the machine is doing hits logging on and off alike.
    servers = {on: Server({**env, "VIDMON_SERVE__LOG_PREDICTIONS": str(on).lower(),
                           "VIDMON_SERVE__SPOOL_PATH": str(work / f"spool-{on}.jsonl")}, work)
               for on in (True, False)}
    rates: dict[tuple[bool, int], list[float]] = {}
    try:
        for _ in range(args.rounds):
            for concurrency in (1, 8, 32):
                for on, server in servers.items():
                    rate, failures = asyncio.run(load(server.url, payload, args.requests,
                                                      concurrency))
                    if failures:
                        print(f"  {failures} requests failed at concurrency {concurrency}")
                    rates.setdefault((on, concurrency), []).append(rate)
    finally:
        for server in servers.values():
            server.stop()
    for concurrency in (1, 8, 32):
        on = float(np.median(rates[(True, concurrency)]))
        off = float(np.median(rates[(False, concurrency)]))
        print(f"concurrency {concurrency:2d}: served {on:6.1f} clips/s = {on / raw:.2f} x raw "
              f"(logging off {off:6.1f} = {off / raw:.2f} x raw); logging cost "
              f"{100 * (1 - on / off):+.1f} % (median of {args.rounds} alternating rounds)")

    engine = create_store_engine(env["VIDMON_DATABASE_URL"])
    before = PredictionRepository(engine).count()
    server = Server({**env, "VIDMON_SERVE__LOG_PREDICTIONS": "true",
                     "VIDMON_SERVE__SPOOL_PATH": str(work / "spool-count.jsonl")}, work)
    try:
        _, failures = asyncio.run(load(server.url, payload, args.count_requests, 32))
    finally:
        server.stop()
    rows = PredictionRepository(engine).count() - before - 2  # minus the two warm-up requests
    print(f"{args.count_requests} requests ({failures} failed) left {rows} rows: "
          f"{'exactly one each' if rows == args.count_requests - failures else 'MISMATCH'}")


if __name__ == "__main__":
    main()
