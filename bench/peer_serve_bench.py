"""vidmon against LitServe, serving the same registered model on the same device, in one run.

- vidmon: ``vidmon serve`` with prediction logging on (every prediction committed to the
  store with its embedding and features before the answer goes out);
- LitServe: ``bench/_litserve_peer.py``, the same model and runtime, the same multipart
  ``.npy`` upload decoded by vidmon's decoder, the same maximum batch size and no extra
  batch wait, logging nothing;
- raw: forward passes of full batches, no HTTP (as ``serve_bench.py`` measures it);
- vidmon raw body: vidmon again, the clip sent as the request body
  (``Content-Type: application/x-npy``) instead of a multipart file;
- vidmon logging off: a second vidmon server with ``log_predictions`` off (no records, no
  commit; the pixel features are still measured), to show what durable logging costs.

Both servers stay up and the rounds alternate between them at concurrency 1, 8 and 32, so
whatever else the machine does hits both alike; the one not being measured is paused
(SIGSTOP), since LitServe's workers spin on their queue and take a core while idle. For each it prints clips/s, p50
and p99 latency (medians over rounds), the ratio vidmon / LitServe and each one's ratio to
raw. Needs the bench extra: ``pip install -e '.[bench]'``.

Usage: python bench/peer_serve_bench.py [--requests 400] [--rounds 3] [--device auto]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import Server, bench_setup, load, raw_clips_per_second  # noqa: E402

from monitor.runtime import resolve_device  # noqa: E402

LEVELS = (1, 8, 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per load level")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    work, env, settings, clip, payload = bench_setup(
        "vidmon-peer-", device=str(device), max_batch_size=str(args.batch_size),
        log_predictions="true")
    raw = raw_clips_per_second(settings, clip, args.batch_size, seconds=10)
    print(f"raw forward, batch {args.batch_size}: {raw:.1f} clips/s (device {device}, "
          f"{torch.get_num_threads()} threads)", flush=True)

    peer = [sys.executable, str(Path(__file__).with_name("_litserve_peer.py")),
            "--batch-size", str(args.batch_size), "--device", str(device)]
    servers = {"vidmon": Server(env, work),
               "vidmon logging off": Server({**env, "VIDMON_SERVE__LOG_PREDICTIONS": "false"},
                                            work, log="server-nolog.log"),
               "LitServe": Server(env, work, command=peer, log="litserve.log",
                                  ready_path="/health")}
    # (name, server, clip sent as the request body instead of a multipart file)
    variants = [("vidmon", servers["vidmon"], False), ("LitServe", servers["LitServe"], False),
                ("vidmon raw body", servers["vidmon"], True),
                ("vidmon logging off", servers["vidmon logging off"], False)]
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    try:
        for _ in range(args.rounds):
            for level in LEVELS:
                for name, server, raw_body in variants:
                    for other in servers.values():
                        other.pause(other is not server)
                    latencies: list[float] = []
                    rate, failures = asyncio.run(load(server.url, payload, args.requests,
                                                      level, latencies, raw_body))
                    if failures:
                        print(f"  {name}: {failures} requests failed at concurrency {level}")
                    results.setdefault((name, level), []).append(
                        (rate, float(np.percentile(latencies, 50)),
                         float(np.percentile(latencies, 99))))
    finally:
        for server in servers.values():
            server.pause(False)
            server.stop()

    def median(name: str, level: int, i: int) -> float:
        return float(np.median([r[i] for r in results[(name, level)]]))

    for level in LEVELS:
        line = f"concurrency {level:2d}:"
        for name, _, _ in variants:
            rate = median(name, level, 0)
            line += (f"\n  {name:16s} {rate:6.1f} clips/s = {rate / raw:.2f} x raw, p50 "
                     f"{1000 * median(name, level, 1):6.1f} ms, p99 "
                     f"{1000 * median(name, level, 2):6.1f} ms |")
        lit = median("LitServe", level, 0)
        ratios = ", ".join(f"{name} {median(name, level, 0) / lit:.2f}"
                           for name, _, _ in variants if name not in ("vidmon", "LitServe"))
        print(f"{line} vidmon / LitServe {median('vidmon', level, 0) / lit:.2f} ({ratios}; "
              f"median of {args.rounds} alternating rounds)", flush=True)


if __name__ == "__main__":
    main()
