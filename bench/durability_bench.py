"""What durable acknowledgement costs: a 200 only once the record is committed (group
commit), against answering as soon as the record is queued (vidmon's behaviour before).

Both servers run side by side on one store kind, rounds alternate, and the same clips go to
each at concurrency 1 and 32; printed: clips/s, p50 and p99 latency, the ratio durable /
queued, and the commits per request (group commit shares one flush among requests).

Usage: python bench/durability_bench.py [--requests 400] [--rounds 3]
                                        [--database-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_bench  # noqa: E402
from serve_bench import register_model  # noqa: E402

from monitor.settings import Settings  # noqa: E402
from training.synthetic import ClipSpec, generate_clip  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Server(serve_bench.Server):
    """``_ack_server.py MODE`` as a subprocess on 127.0.0.1."""

    def __init__(self, mode: str, env: dict[str, str], workdir: Path) -> None:
        self.mode = mode
        super().__init__(env, workdir, [sys.executable, str(ROOT / "bench" / "_ack_server.py"),
                                        mode], log=f"{mode}.log")

    def flushes(self) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        match = re.search(r"^vidmon_log_records_flushes (\S+)$", text, re.M)
        return float(match.group(1)) if match else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--database-url", default=None, help="default: a SQLite file")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    work = Path(tempfile.mkdtemp(prefix="vidmon-durability-"))
    env = {"VIDMON_MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
           "VIDMON_MLFLOW_ARTIFACTS_DIR": str(work / "mlartifacts"),
           "VIDMON_DATABASE_URL": args.database_url or f"sqlite:///{work / 'vidmon.db'}",
           "VIDMON_SERVE__CLIP_SAMPLE_RATE": "0", "VIDMON_LOG_LEVEL": "WARNING"}
    os.environ.update(env)
    settings = Settings()
    register_model(settings)
    train = settings.train
    buffer = io.BytesIO()
    np.save(buffer, generate_clip(0, np.random.default_rng(0),
                                  ClipSpec(train.frames, train.height, train.width)))
    payload = buffer.getvalue()
    store = "PostgreSQL" if args.database_url else "SQLite (synchronous=FULL)"
    print(f"store: {store}; {args.requests} requests a round, {args.rounds} rounds")

    servers = {mode: Server(mode, {**env, "VIDMON_SERVE__SPOOL_PATH":
                                   str(work / f"spool-{mode}.jsonl")}, work)
               for mode in ("durable", "queued")}
    rates: dict[tuple[str, int], list[float]] = {}
    latencies: dict[tuple[str, int], list[float]] = {}
    flushes: dict[int, list[float]] = {}
    try:
        for _ in range(args.rounds):
            for concurrency in (1, 32):
                for mode, server in servers.items():
                    before = server.flushes()
                    times = latencies.setdefault((mode, concurrency), [])
                    rate, failures = asyncio.run(serve_bench.load(
                        server.url, payload, args.requests, concurrency, times))
                    if failures:
                        print(f"  {mode}: {failures} requests failed at {concurrency}")
                    rates.setdefault((mode, concurrency), []).append(rate)
                    if mode == "durable":
                        flushes.setdefault(concurrency, []).append(
                            (server.flushes() - before) / args.requests)
    finally:
        for server in servers.values():
            server.stop()
    for concurrency in (1, 32):
        row = {}
        for mode in ("durable", "queued"):
            ms = np.array(latencies[(mode, concurrency)]) * 1000
            row[mode] = (float(np.median(rates[(mode, concurrency)])),
                         float(np.percentile(ms, 50)), float(np.percentile(ms, 99)))
        (d_rate, d50, d99), (q_rate, q50, q99) = row["durable"], row["queued"]
        print(f"concurrency {concurrency:2d}: durable {d_rate:6.1f} clips/s p50 {d50:6.1f} ms "
              f"p99 {d99:6.1f} ms | queued {q_rate:6.1f} clips/s p50 {q50:6.1f} ms p99 "
              f"{q99:6.1f} ms | throughput {d_rate / q_rate:.2f} x, p50 {d50 / q50:.2f} x, "
              f"p99 {d99 / q99:.2f} x | {np.median(flushes[concurrency]):.2f} commits "
              "per request")


if __name__ == "__main__":
    main()
