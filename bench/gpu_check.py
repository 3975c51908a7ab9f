"""The GPU path, checked and measured in one run that fits a short GPU lease.

Needs torch, numpy and pandas, plus the serving stack (FastAPI, SQLAlchemy, PyAV, ...:
``bench/gpu_check.sh --wheels DIR`` installs them from wheels carried to a bare machine);
never MLflow or Evidently. Sections, each timed and allowed to fail on its own:

1. ``tests``: the model runtime on CUDA for vidmon's R(2+1)D, a TorchScript model and a
   ``torch.export`` program (bf16 autocast against float32 on the CPU, within stated
   tolerances); the dynamic batcher on CUDA with concurrent submitters; the embedding-
   drift test on CUDA (bf16 products) against the CPU on the same arrays.
2. ``raw``: R(2+1)D-18 at 16 x 112 x 112 in bf16 over batch sizes 1-256: clips/s and
   TFLOP/s against the chip's bf16 peak (measured with a large matrix product, and the
   datasheet's), for the serving layout, channels-last input, and ``torch.compile``.
3. ``service``: the prediction path on CUDA without HTTP (the service object the routes
   call) and with it (a real uvicorn on 127.0.0.1 in a child process, clients in other
   processes), logging to SQLite on and off, at concurrency 1/8/32/128: clips/s against
   raw, p50/p99.
4. ``decode``: PyAV on the CPU cores (the service's decoder: scaled to the model's size
   as it decodes) against NVDEC through PyNvVideoCodec when it is installed, on 480p,
   720p and 1080p H.264: frames/s.
5. ``memory``: peak GPU memory per batch size, and the largest batch that fits beside a
   decoder.

Writes ``summary.json`` and ``summary.md`` to ``--out``. ``--dry-run`` runs the same code on
the CPU with tiny sizes (the test suite runs it).

Usage: bench/gpu_check.sh --out DIR [--wheels DIR] [--dry-run] [--sections ...]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.card import KINETICS_MEAN, KINETICS_STD, ModelCard  # noqa: E402
from monitor.runtime import ModelRuntime, autocast_for  # noqa: E402
from training.model import ModelConfig  # noqa: E402
from training.modelfile import load_network, move_network, vidmon_network  # noqa: E402

SECTIONS = ("tests", "raw", "service", "decode", "memory")
CLIENT_PROCESSES = 4
H200_BF16_DENSE_TFLOPS = 989.0  # the datasheet's dense bf16 rate (H100/H200 SXM)
# Tolerances of bf16 autocast against float32 (relative L2 error over a batch)
LOGITS_TOLERANCE = 3e-2
EMBEDDING_TOLERANCE = 3e-2


@dataclass(frozen=True)
class Sizes:
    """What a run measures: full sizes on a GPU, tiny ones in a dry run."""

    frames: int
    side: int
    classes: int
    batches: tuple[int, ...]
    concurrency: tuple[int, ...]
    seconds: float  # per measured load level
    drift_rows: int
    resolutions: tuple[tuple[str, int, int], ...]
    video_seconds: float
    compile_batch: int | None


FULL = Sizes(16, 112, 400, (1, 2, 4, 8, 16, 32, 64, 128, 256), (1, 8, 32, 128), 4.0,
             10_000, (("480p", 854, 480), ("720p", 1280, 720), ("1080p", 1920, 1080)), 10.0,
             128)
DRY = Sizes(4, 16, 5, (1, 2), (1, 2), 0.5, 300, (("tiny", 64, 48),), 0.5, None)


def card_for(sizes: Sizes, embedding_method: str | None = None) -> ModelCard:
    """A Kinetics-style card at the run's clip size (stretch resize, uniform sampling)."""
    return ModelCard(labels=tuple(f"class_{i}" for i in range(sizes.classes)),
                     frames=sizes.frames, height=sizes.side, width=sizes.side,
                     mean=KINETICS_MEAN, std=KINETICS_STD, name="gpu-check",
                     embedding_method=embedding_method)


def r2plus1d(sizes: Sizes, dry: bool) -> nn.Module:
    """vidmon's R(2+1)D (-18 at full size, a small one in a dry run), random weights."""
    torch.manual_seed(0)
    config = ModelConfig(num_classes=sizes.classes, stem_width=8, widths=(8, 16), blocks=(1, 1)) \
        if dry else ModelConfig.r2plus1d_18(sizes.classes)
    return vidmon_network(config).network.eval()


class TeamNet(nn.Module):
    """Not vidmon's architecture: plain 3D convolutions and a linear head (logits only,
    the embedding through an exported method or a named layer)."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(3, 16, 3, padding=1), nn.BatchNorm3d(16), nn.ReLU(),
            nn.MaxPool3d((1, 2, 2)), nn.Conv3d(16, 32, 3, padding=1), nn.BatchNorm3d(32),
            nn.ReLU())
        self.proj = nn.Linear(32, 24)
        self.head = nn.Linear(24, classes)

    @torch.jit.export
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.proj(self.features(x).mean(dim=(2, 3, 4))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def clips_for(sizes: Sizes, n: int, seed: int = 0) -> np.ndarray:
    """Random uint8 clips (n, T, H, W, 3)."""
    return np.random.default_rng(seed).integers(
        0, 256, (n, sizes.frames, sizes.side, sizes.side, 3), dtype=np.uint8)


def relative_error(value: np.ndarray, reference: np.ndarray) -> float:
    """||value - reference|| / ||reference||."""
    return float(np.linalg.norm(value - reference) / max(np.linalg.norm(reference), 1e-12))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------
# 1. the CUDA tests


def check_runtime(name: str, network: nn.Module, card: ModelCard, device: torch.device,
                  clips: np.ndarray) -> dict[str, Any]:
    """A runtime on ``device`` (bf16 autocast on CUDA) against float32 on the CPU."""
    cpu = ModelRuntime(move_network(network, torch.device("cpu")), card, name, "1",
                       torch.device("cpu"))
    with torch.inference_mode():
        logits_cpu, emb_cpu = cpu.network(_input(clips, card, torch.device("cpu")))
    target = ModelRuntime(move_network(network, device), card, name, "1", device)
    with torch.inference_mode(), autocast_for(device):
        logits_dev, emb_dev = target.network(_input(clips, card, device))
    probabilities, embeddings, _ = target.predict(clips)
    logits_error = relative_error(logits_dev.float().cpu().numpy(), logits_cpu.numpy())
    embedding_error = relative_error(emb_dev.float().cpu().numpy(), emb_cpu.numpy())
    probs_cpu = torch.softmax(logits_cpu, dim=1).numpy()
    ok = logits_error <= LOGITS_TOLERANCE and embedding_error <= EMBEDDING_TOLERANCE
    return {"model": name, "device": str(device), "logits_relative_error": logits_error,
            "embedding_relative_error": embedding_error,
            "probability_max_abs_error": float(np.abs(probabilities - probs_cpu).max()),
            "embedding_predict_error": relative_error(embeddings, emb_cpu.numpy()),
            "tolerance": [LOGITS_TOLERANCE, EMBEDDING_TOLERANCE], "passed": bool(ok)}


def _input(clips: np.ndarray, card: ModelCard, device: torch.device) -> torch.Tensor:
    from monitor.preprocess import to_model_input

    return to_model_input(torch.from_numpy(clips).to(device), card)


def check_models(sizes: Sizes, dry: bool, device: torch.device, work: Path) -> list[dict]:
    """vidmon's R(2+1)D, a TorchScript and a torch.export model on ``device``."""
    clips = clips_for(sizes, 4)
    results = [check_runtime("vidmon r2plus1d", r2plus1d(sizes, dry), card_for(sizes),
                             device, clips)]
    torch.manual_seed(1)
    team = TeamNet(sizes.classes).eval()
    script_path = work / "team.ts"
    torch.jit.save(torch.jit.script(team), str(script_path))
    scripted = load_network(script_path, card_for(sizes, "embed")).network
    results.append(check_runtime("torchscript", scripted, card_for(sizes, "embed"), device,
                                 clips))
    x = _input(clips[:2], card_for(sizes), torch.device("cpu"))
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(team, (x,), dynamic_shapes=({0: batch},))
    export_path = work / "team.pt2"
    torch.export.save(program, str(export_path))
    card = replace(card_for(sizes), embedding_layer="proj")
    exported = load_network(export_path, card).network
    results.append(check_runtime("torch.export", exported, card, device, clips))
    return results


def check_batcher(sizes: Sizes, dry: bool, device: torch.device) -> dict[str, Any]:
    """Concurrent submitters share forward passes; each gets its own clips' rows."""
    from serving.batcher import DynamicBatcher

    runtime = ModelRuntime(move_network(r2plus1d(sizes, dry), device), card_for(sizes),
                           "vidmon", "1", device)
    runtime.warm_up()
    groups = [clips_for(sizes, 1 + i % 3, seed=100 + i) for i in range(48)]
    batches: list[int] = []

    async def run() -> list[tuple[np.ndarray, ...]]:
        batcher = DynamicBatcher(runtime.predict, max_batch_size=16, max_wait_ms=2.0,
                                 on_batch=lambda s: batches.append(s.size))
        await batcher.start()
        try:
            return await asyncio.gather(*[batcher.submit(g) for g in groups])
        finally:
            await batcher.stop()

    answers = asyncio.run(run())
    worst = 0.0
    for group, answer in zip(groups, answers):
        alone = runtime.predict(group)
        worst = max(worst, float(np.abs(answer[0] - alone[0]).max()))
        assert answer[0].shape == alone[0].shape
    shared = sum(b > 1 for b in batches)
    return {"groups": len(groups), "forward_passes": len(batches),
            "passes_shared_by_several": shared, "largest_batch": max(batches),
            "probability_max_abs_difference_to_alone": worst,
            "passed": bool(shared > 0 and len(batches) < len(groups) and worst < 2e-2)}


def check_drift(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """The embedding test on ``device`` against the CPU on the same arrays."""
    from monitor.drift.embedding import embedding_drift

    rng = np.random.default_rng(3)
    n, d = sizes.drift_rows, 128 if sizes is FULL else 16
    reference = rng.normal(0, 1, (n, d)).astype(np.float32)
    cases = {"clean": rng.normal(0, 1, (n, d)), "shifted": rng.normal(0.05, 1, (n, d)),
             "wider": rng.normal(0, 1.15, (n, d))}
    rows = []
    for name, current in cases.items():
        started = time.perf_counter()
        on_cpu = embedding_drift(reference, current.astype(np.float32), device="cpu")
        cpu_s = time.perf_counter() - started
        started = time.perf_counter()
        on_device = embedding_drift(reference, current.astype(np.float32), device=device)
        sync(device)
        device_s = time.perf_counter() - started
        rows.append({"case": name, "p_cpu": on_cpu.p_value, "p_device": on_device.p_value,
                     "drifted_cpu": on_cpu.drifted, "drifted_device": on_device.drifted,
                     "statistic_relative_difference": abs(on_device.statistic - on_cpu.statistic)
                     / max(abs(on_cpu.statistic), 1e-12),
                     "effect_cpu": on_cpu.effect, "effect_device": on_device.effect,
                     "seconds_cpu": cpu_s, "seconds_device": device_s})
    # The p-value may move by one permutation (1/201) where a statistic ties within bf16
    # rounding; the verdicts must agree.
    ok = all(r["drifted_cpu"] == r["drifted_device"] and
             abs(r["p_cpu"] - r["p_device"]) <= 1.5 / 201 for r in rows)
    return {"rows_per_side": n, "dimensions": d, "cases": rows, "passed": bool(ok)}


def section_tests(sizes: Sizes, dry: bool, device: torch.device, work: Path) -> dict[str, Any]:
    models = check_models(sizes, dry, device, work)
    batcher = check_batcher(sizes, dry, device)
    drift = check_drift(sizes, device)
    return {"models": models, "batcher": batcher, "embedding_drift": drift,
            "passed": all(m["passed"] for m in models) and batcher["passed"] and drift["passed"]}


# ---------------------------------------------------------------------------------------
# 2. raw throughput


def flops_per_clip(network: nn.Module, sizes: Sizes, device: torch.device) -> float:
    """Floating-point operations of one clip's forward pass (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, sizes.frames, sizes.side, sizes.side, device=device)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        network(x)
    return float(counter.get_total_flops())


def peak_matmul_tflops(device: torch.device, dry: bool) -> float | None:
    """bf16 dense matrix product rate, measured (8192^3, random data)."""
    if device.type != "cuda":
        return None
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    return 2 * n ** 3 / time_call(lambda: a @ b, device, repeats=10) / 1e12


def time_call(call: Callable[[], Any], device: torch.device, repeats: int = 10,
              min_seconds: float = 0.3) -> float:
    """Median seconds of one call (device events on CUDA), after warm-up."""
    for _ in range(2):
        call()
    sync(device)
    times = []
    started = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - started < min_seconds and
                                   len(times) < 200):
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            call()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1000)
        else:
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def section_raw(sizes: Sizes, dry: bool, device: torch.device) -> dict[str, Any]:
    network = move_network(r2plus1d(sizes, dry), device)
    flops = flops_per_clip(network, sizes, device)
    peak = peak_matmul_tflops(device, dry)
    variants: dict[str, dict[int, float]] = {}
    for layout in ("serving", "channels_last_input"):
        variants[layout] = {}
        for batch in sizes.batches:
            x = torch.randn(batch, 3, sizes.frames, sizes.side, sizes.side, device=device)
            if layout == "channels_last_input":
                x = x.contiguous(memory_format=torch.channels_last_3d)

            @torch.inference_mode()
            def forward(x: torch.Tensor = x) -> None:
                with autocast_for(device):
                    network(x)

            try:
                variants[layout][batch] = batch / time_call(forward, device)
            except torch.OutOfMemoryError:
                break
    compiled: dict[int, float] = {}
    compile_s = None
    if sizes.compile_batch and device.type == "cuda":
        started = time.perf_counter()
        # The default mode: max-autotune's kernel search takes minutes a lease lacks.
        fast = torch.compile(network, dynamic=False)
        x = torch.randn(sizes.compile_batch, 3, sizes.frames, sizes.side, sizes.side,
                        device=device)

        @torch.inference_mode()
        def forward_compiled() -> None:
            with autocast_for(device):
                fast(x)

        forward_compiled()
        sync(device)
        compile_s = time.perf_counter() - started
        compiled[sizes.compile_batch] = sizes.compile_batch / time_call(forward_compiled, device)
    variants["torch.compile"] = compiled
    table = []
    for layout, rates in variants.items():
        for batch, rate in rates.items():
            tflops = rate * flops / 1e12
            table.append({"variant": layout, "batch": batch, "clips_per_s": rate,
                          "tflops": tflops,
                          "share_of_measured_peak": None if not peak else tflops / peak,
                          "share_of_datasheet_peak": tflops / H200_BF16_DENSE_TFLOPS})
    best = max(table, key=lambda r: r["clips_per_s"])
    return {"gflops_per_clip": flops / 1e9, "measured_bf16_peak_tflops": peak,
            "datasheet_bf16_peak_tflops": H200_BF16_DENSE_TFLOPS,
            "compile_seconds": compile_s, "rows": table, "best": best}


# ---------------------------------------------------------------------------------------
# 3. the service path


class FixedSource:
    """A model source without a registry: one runtime built here (serving's
    ``ModelSource``; the monitor's profile is not needed to serve)."""

    def __init__(self, sizes: Sizes, dry: bool) -> None:
        self.sizes, self.dry = sizes, dry

    def load(self, model_uri: str, device: str, version: str | None = None) -> ModelRuntime:
        torch_device = torch.device(device)
        return ModelRuntime(move_network(r2plus1d(self.sizes, self.dry), torch_device),
                            card_for(self.sizes), "gpu-check", "1", torch_device)

    def version_of(self, model_uri: str) -> str:
        return "1"

    def profile(self, model_name: str, model_version: str) -> Any:
        raise NotImplementedError("the GPU check serves; it does not monitor")


def service_settings(work: Path, device: str, logging: bool, batch: int) -> Any:
    from monitor.settings import ServeSettings, Settings

    return Settings(
        database_url=f"sqlite:///{work / ('log-on' if logging else 'log-off')}.db",
        clip_dir=work / "clips", evidently_workspace=None, model_name="gpu-check",
        serve=ServeSettings(device=device, max_batch_size=batch, log_predictions=logging,
                            clip_sample_rate=0.0, threads=4, limit_concurrency=512,
                            max_queued_clips=4096, decode_workers=4,
                            spool_path=work / f"spool-{logging}.jsonl",
                            model_poll_interval_s=3600))


def npy_bytes(clip: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, clip)
    return buffer.getvalue()


def direct_load(sizes: Sizes, dry: bool, device: str, logging: bool, batch: int,
                work: Path) -> dict[int, dict[str, float]]:
    """The service object the routes call, without HTTP: decode (.npy), batcher, model,
    features, durable log."""
    from serving.app import create_app
    from serving.service import Upload

    app = create_app(service_settings(work, device, logging, batch), FixedSource(sizes, dry))
    payload = npy_bytes(clips_for(sizes, 1)[0])
    results = {}

    async def run() -> None:
        async with app.router.lifespan_context(app):
            service = app.state.service

            async def one() -> float:
                sent = time.perf_counter()
                prepared = await service.prepare_all([Upload(payload, "c.npy",
                                                             "application/x-npy")])
                await service.predict(prepared[0])
                return time.perf_counter() - sent

            for concurrency in sizes.concurrency:
                await asyncio.gather(*[one() for _ in range(concurrency)])  # warm
                latencies: list[float] = []
                deadline = time.perf_counter() + sizes.seconds
                started = time.perf_counter()

                async def worker() -> None:
                    while time.perf_counter() < deadline:
                        latencies.append(await one())

                await asyncio.gather(*[worker() for _ in range(concurrency)])
                elapsed = time.perf_counter() - started
                results[concurrency] = _rates(latencies, elapsed)

    asyncio.run(run())
    return results


def _rates(latencies: list[float], elapsed: float) -> dict[str, float]:
    return {"clips_per_s": len(latencies) / elapsed, "requests": len(latencies),
            "p50_ms": 1000 * float(np.percentile(latencies, 50)),
            "p99_ms": 1000 * float(np.percentile(latencies, 99))}


def serve_child(config: dict[str, Any]) -> None:
    """The service on uvicorn in this (child) process, for the HTTP measurements."""
    import uvicorn

    from serving.app import create_app

    sizes = FULL if not config["dry"] else DRY
    settings = service_settings(Path(config["work"]), config["device"], config["logging"],
                                config["batch"])
    uvicorn.run(create_app(settings, FixedSource(sizes, config["dry"])), host="127.0.0.1",
                port=config["port"], log_level="warning", limit_concurrency=512)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(url: str, payload: bytes, concurrency: int, seconds: float
            ) -> tuple[list[float], int]:
    """One client process's share of a load level: ``concurrency`` requests in flight for
    ``seconds``; latencies of the answered ones and the failures."""
    import httpx

    async def run() -> tuple[list[float], int]:
        latencies: list[float] = []
        failures = 0
        limits = httpx.Limits(max_connections=concurrency,
                              max_keepalive_connections=concurrency)
        headers = {"content-type": "application/x-npy"}
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
            for _ in range(2):
                await client.post("/v1/predict", content=payload, headers=headers)
            deadline = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal failures
                while time.perf_counter() < deadline:
                    sent = time.perf_counter()
                    response = await client.post("/v1/predict", content=payload,
                                                 headers=headers)
                    if response.status_code == 200:
                        latencies.append(time.perf_counter() - sent)
                    else:
                        failures += 1

            await asyncio.gather(*[worker() for _ in range(concurrency)])
        return latencies, failures

    return asyncio.run(run())


def http_load(sizes: Sizes, dry: bool, device: str, logging: bool, batch: int,
              work: Path) -> dict[int, dict[str, float]]:
    """A real uvicorn on 127.0.0.1 in a child process; clients in up to 4 processes."""
    port = _free_port()
    config = {"dry": dry, "work": str(work), "device": device, "logging": logging,
              "batch": batch, "port": port}
    child = subprocess.Popen([sys.executable, __file__, "--serve-child", json.dumps(config)],
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                 [str(ROOT), os.environ.get("PYTHONPATH", "")])},
                             stderr=open(work / f"server-{logging}.log", "ab"))
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, child)
        payload = npy_bytes(clips_for(sizes, 1)[0])
        results = {}
        # Clients in their own processes (started once), so the load generator neither
        # shares the server's interpreter nor runs out of one core at concurrency 128.
        with multiprocessing.get_context("spawn").Pool(CLIENT_PROCESSES) as pool:
            for concurrency in sizes.concurrency:
                processes = min(CLIENT_PROCESSES, concurrency)
                shares = [concurrency // processes + (i < concurrency % processes)
                          for i in range(processes)]
                gathered = pool.starmap(_client, [(url, payload, share, sizes.seconds)
                                                  for share in shares])
                latencies = [x for lat, _ in gathered for x in lat]
                results[concurrency] = {**_rates(latencies, sizes.seconds),
                                        "failures": sum(f for _, f in gathered)}
        return results
    finally:
        child.terminate()
        child.wait(timeout=60)


def _wait_ready(url: str, child: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"the server exited with {child.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not get ready in 180 s")


def section_service(sizes: Sizes, dry: bool, device: torch.device, work: Path,
                    raw: dict[str, Any] | None) -> dict[str, Any]:
    batch = 32 if not dry else 2
    network = move_network(r2plus1d(sizes, dry), device)
    x = torch.randn(batch, 3, sizes.frames, sizes.side, sizes.side, device=device)

    @torch.inference_mode()
    def forward() -> None:
        with autocast_for(device):
            network(x)

    raw_rate = batch / time_call(forward, device)
    out: dict[str, Any] = {"max_batch_size": batch, "raw_clips_per_s": raw_rate, "levels": []}
    paths = {"direct": direct_load, "http": http_load}
    measured: dict[tuple[str, bool], dict[int, dict[str, float]]] = {}
    for path, run in paths.items():
        for logging in (True, False):
            measured[(path, logging)] = run(sizes, dry, str(device), logging, batch, work)
    for path in paths:
        for concurrency in sizes.concurrency:
            on, off = measured[(path, True)][concurrency], measured[(path, False)][concurrency]
            out["levels"].append({
                "path": path, "concurrency": concurrency,
                "clips_per_s": on["clips_per_s"], "served_over_raw": on["clips_per_s"] / raw_rate,
                "p50_ms": on["p50_ms"], "p99_ms": on["p99_ms"],
                "logging_off_clips_per_s": off["clips_per_s"],
                "logging_cost": 1 - on["clips_per_s"] / off["clips_per_s"],
                "failures": on.get("failures", 0) + off.get("failures", 0)})
    return out


# ---------------------------------------------------------------------------------------
# 4. decoding


def write_h264(path: Path, width: int, height: int, seconds: float, fps: int = 30) -> Path:
    """A test video: moving gradients and noise (so the encoder has work), H.264."""
    import av

    frames = int(seconds * fps)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    base = np.repeat(np.repeat(base, 8, axis=0), 8, axis=1)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "ultrafast"}
        for i in range(frames):
            frame = np.roll(base, (i * 3, i * 5), axis=(0, 1))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def decode_pyav(path: Path, side: int | None) -> tuple[int, float]:
    """Frames and seconds to decode a file with PyAV (threads on), as RGB, scaled to
    ``side`` x ``side`` as the service does (None: full size)."""
    import av

    started = time.perf_counter()
    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if side:
                frame.to_ndarray(width=side, height=side, format="rgb24")
            else:
                frame.to_ndarray(format="rgb24")
            count += 1
    return count, time.perf_counter() - started


def decode_nvdec(path: Path) -> tuple[int, float]:
    """Frames and seconds to decode a file on the GPU (NVDEC, PyNvVideoCodec), RGB in
    device memory."""
    import PyNvVideoCodec as nvc

    started = time.perf_counter()
    decoder = nvc.SimpleDecoder(str(path), gpu_id=0, use_device_memory=True,
                                output_color_type=nvc.OutputColorType.RGB)
    count = 0
    while True:
        frames = decoder.get_batch_frames(64)
        if not frames:
            break
        for frame in frames:
            torch.from_dlpack(frame)
        count += len(frames)
    torch.cuda.synchronize()
    return count, time.perf_counter() - started


def section_decode(sizes: Sizes, work: Path) -> dict[str, Any]:
    try:
        import PyNvVideoCodec  # noqa: F401
        gpu_decoder: str | None = "PyNvVideoCodec"
    except Exception as exc:  # noqa: BLE001 - not installed, or no NVDEC driver
        gpu_decoder = None
        gpu_missing = f"{type(exc).__name__}: {exc}"[:200]
    rows = []
    for name, width, height in sizes.resolutions:
        path = write_h264(work / f"{name}.mp4", width, height, sizes.video_seconds)
        decode_pyav(path, sizes.side)  # warm the codec
        frames, seconds = decode_pyav(path, None)
        _, scaled_seconds = decode_pyav(path, sizes.side)
        row = {"resolution": name, "width": width, "height": height, "frames": frames,
               "bytes": path.stat().st_size, "pyav_fps": frames / seconds,
               "pyav_scaled_fps": frames / scaled_seconds, "cpu_cores": os.cpu_count()}
        if gpu_decoder:
            try:
                decode_nvdec(path)
                gpu_frames, gpu_seconds = decode_nvdec(path)
                row["nvdec_fps"] = gpu_frames / gpu_seconds
            except Exception as exc:  # noqa: BLE001 - a driver without NVDEC, say
                row["nvdec_error"] = f"{type(exc).__name__}: {exc}"[:300]
        rows.append(row)
    for row in rows:
        best_cpu = row["pyav_scaled_fps"]
        row["use"] = ("nvdec" if row.get("nvdec_fps", 0) > best_cpu else "pyav")
    return {"gpu_decoder": gpu_decoder or f"none ({gpu_missing})", "rows": rows}


# ---------------------------------------------------------------------------------------
# 5. memory


def section_memory(sizes: Sizes, dry: bool, device: torch.device,
                   decode_rows: list[dict[str, Any]] | None) -> dict[str, Any]:
    if device.type != "cuda":
        return {"skipped": "no CUDA device"}
    network = move_network(r2plus1d(sizes, dry), device)
    torch.cuda.synchronize()
    weights = torch.cuda.memory_allocated()
    rows = []
    for batch in sizes.batches:
        torch.cuda.reset_peak_memory_stats()
        x = torch.zeros(batch, 3, sizes.frames, sizes.side, sizes.side, device=device)
        with torch.inference_mode(), autocast_for(device):
            network(x)
        torch.cuda.synchronize()
        rows.append({"batch": batch, "peak_gib": torch.cuda.max_memory_allocated() / 2**30})
        del x
    # Peak grows linearly with the batch: bytes per clip from the two largest batches.
    (b1, p1), (b2, p2) = [(r["batch"], r["peak_gib"] * 2**30) for r in rows[-2:]]
    per_clip = (p2 - p1) / (b2 - b1)
    free, total = torch.cuda.mem_get_info()
    decoder = _decoder_bytes() if decode_rows else None
    reserve = (decoder or 512 * 2**20) + 2 * 2**30  # the decoder and 2 GiB of headroom
    fits = int((total - weights - reserve) // per_clip)
    verified = None
    try:
        torch.cuda.reset_peak_memory_stats()
        x = torch.zeros(min(fits, 4096), 3, sizes.frames, sizes.side, sizes.side,
                        device=device)
        with torch.inference_mode(), autocast_for(device):
            network(x)
        torch.cuda.synchronize()
        verified = {"batch": int(x.shape[0]),
                    "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
        del x
    except torch.OutOfMemoryError as exc:
        verified = {"batch": min(fits, 4096), "error": str(exc)[:200]}
    torch.cuda.empty_cache()
    return {"weights_gib": weights / 2**30, "per_clip_mib": per_clip / 2**20, "rows": rows,
            "device_total_gib": total / 2**30, "decoder_gib": None if decoder is None
            else decoder / 2**30, "largest_batch_beside_decoder": fits, "verified": verified}


def _decoder_bytes() -> int | None:
    """Device memory one NVDEC session takes (1080p), when PyNvVideoCodec is there."""
    try:
        import PyNvVideoCodec as nvc
    except Exception:  # noqa: BLE001
        return None
    files = sorted(Path(tempfile.gettempdir()).glob("vidmon-gpu-check-*/1080p.mp4"))
    if not files:
        return None
    torch.cuda.synchronize()
    before = torch.cuda.mem_get_info()[0]
    decoder = nvc.SimpleDecoder(str(files[-1]), gpu_id=0, use_device_memory=True,
                                output_color_type=nvc.OutputColorType.RGB)
    decoder.get_batch_frames(16)
    torch.cuda.synchronize()
    used = before - torch.cuda.mem_get_info()[0]
    del decoder
    return int(max(used, 0))


# ---------------------------------------------------------------------------------------


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets as ratios measured in this run."""
    rows = []
    service = summary.get("service") or {}
    levels = {(r["path"], r["concurrency"]): r for r in service.get("levels", [])}
    measured = sorted({c for _, c in levels})
    # Concurrency 32, or the nearest a dry run measured.
    at = min(measured, key=lambda c: abs(c - 32)) if measured else None
    for path in ("http", "direct"):
        level = levels.get((path, at))
        if level:
            rows.append({"target": f"served ({path}) >= 0.9 x raw at concurrency {at}",
                         "value": level["served_over_raw"],
                         "met": level["served_over_raw"] >= 0.9})
            rows.append({"target": f"logging costs <= 2 % ({path}, concurrency {at})",
                         "value": level["logging_cost"], "met": level["logging_cost"] <= 0.02})
    raw = summary.get("raw") or {}
    best = raw.get("best")
    if best and raw.get("measured_bf16_peak_tflops"):
        rows.append({"target": "raw >= 40 % of bf16 peak at the best batch",
                     "value": best["share_of_measured_peak"],
                     "datasheet_share": best["share_of_datasheet_peak"],
                     "met": best["share_of_measured_peak"] >= 0.4})
    return rows


def markdown(summary: dict[str, Any]) -> str:
    """The short table a person reads (and the README quotes)."""
    lines = [f"# vidmon GPU check: {summary['device_name']}", "",
             f"torch {summary['torch']}, {summary['cpu_cores']} CPU cores, "
             f"{'dry run (CPU, tiny sizes)' if summary['dry_run'] else 'full sizes'}; "
             f"{summary['seconds']:.0f} s in all.", "", "| target | measured | met |",
             "|---|---|---|"]
    for t in summary["targets"]:
        lines.append(f"| {t['target']} | {t['value']:.3f} | {'yes' if t['met'] else 'no'} |")
    raw = summary.get("raw")
    if isinstance(raw, dict) and "rows" in raw:
        lines += ["", f"Raw R(2+1)D forward, bf16, {raw['gflops_per_clip']:.1f} GFLOP/clip; "
                  f"measured bf16 peak {raw['measured_bf16_peak_tflops'] or float('nan'):.0f} "
                  "TFLOP/s:", "", "| variant | batch | clips/s | TFLOP/s | of measured peak |",
                  "|---|---|---|---|---|"]
        for r in raw["rows"]:
            share = r["share_of_measured_peak"]
            lines.append(f"| {r['variant']} | {r['batch']} | {r['clips_per_s']:.0f} | "
                         f"{r['tflops']:.1f} | {'–' if share is None else f'{share:.1%}'} |")
    service = summary.get("service")
    if isinstance(service, dict) and "levels" in service:
        lines += ["", f"Service (raw at batch {service['max_batch_size']}: "
                  f"{service['raw_clips_per_s']:.0f} clips/s):", "",
                  "| path | concurrency | clips/s | / raw | p50 ms | p99 ms | logging off | "
                  "logging cost |", "|---|---|---|---|---|---|---|---|"]
        for r in service["levels"]:
            lines.append(f"| {r['path']} | {r['concurrency']} | {r['clips_per_s']:.0f} | "
                         f"{r['served_over_raw']:.2f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                         f"{r['logging_off_clips_per_s']:.0f} | {r['logging_cost']:+.1%} |")
    decode = summary.get("decode")
    if isinstance(decode, dict) and "rows" in decode:
        lines += ["", f"Decoding H.264 (GPU decoder: {decode['gpu_decoder']}):", "",
                  "| video | PyAV fps | PyAV scaled fps | NVDEC fps | use |",
                  "|---|---|---|---|---|"]
        for r in decode["rows"]:
            nvdec = f"{r['nvdec_fps']:.0f}" if "nvdec_fps" in r else r.get("nvdec_error", "–")
            lines.append(f"| {r['resolution']} | {r['pyav_fps']:.0f} | "
                         f"{r['pyav_scaled_fps']:.0f} | {nvdec} | {r['use']} |")
    memory = summary.get("memory")
    if isinstance(memory, dict) and "rows" in memory:
        lines += ["", f"Memory: weights {memory['weights_gib']:.2f} GiB, "
                  f"{memory['per_clip_mib']:.1f} MiB per clip in flight; largest batch beside "
                  f"a decoder: {memory['largest_batch_beside_decoder']} "
                  f"(verified: {memory['verified']})", "", "| batch | peak GiB |", "|---|---|"]
        lines += [f"| {r['batch']} | {r['peak_gib']:.2f} |" for r in memory["rows"]]
    tests = summary.get("tests")
    if isinstance(tests, dict) and "models" in tests:
        lines += ["", "CUDA tests (bf16 vs float32 relative error; tolerance "
                  f"{LOGITS_TOLERANCE:g}):", ""]
        for m in tests["models"]:
            lines.append(f"- {m['model']}: logits {m['logits_relative_error']:.2e}, "
                         f"embeddings {m['embedding_relative_error']:.2e}: "
                         f"{'pass' if m['passed'] else 'FAIL'}")
        b = tests["batcher"]
        lines.append(f"- batcher: {b['groups']} groups in {b['forward_passes']} passes, largest "
                     f"{b['largest_batch']}: {'pass' if b['passed'] else 'FAIL'}")
        d = tests["embedding_drift"]
        verdicts = ", ".join(f"{c['case']} p {c['p_cpu']:.3f}/{c['p_device']:.3f} "
                             f"({c['seconds_cpu']:.2f}/{c['seconds_device']:.2f} s)"
                             for c in d["cases"])
        lines.append(f"- embedding drift CPU/device: {verdicts}: "
                     f"{'pass' if d['passed'] else 'FAIL'}")
    for name, error in summary.get("errors", {}).items():
        lines.append(f"\n**{name} failed**: `{error.splitlines()[-1]}`")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    dry = args.dry_run
    sizes = DRY if dry else FULL
    device = torch.device("cpu" if dry or not torch.cuda.is_available() else "cuda")
    if not dry and device.type != "cuda":
        raise SystemExit("no CUDA device: run with --dry-run for the CPU check")
    work = Path(tempfile.mkdtemp(prefix="vidmon-gpu-check-"))
    summary: dict[str, Any] = {
        "dry_run": dry, "device": str(device), "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda"
        else platform.processor() or "cpu", "cpu_cores": os.cpu_count(), "errors": {},
        "section_seconds": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    for section in args.sections:
        began = time.perf_counter()
        print(f"[{time.perf_counter() - started:6.1f}s] {section} ...", flush=True)
        try:
            if section == "tests":
                summary[section] = section_tests(sizes, dry, device, work)
            elif section == "raw":
                summary[section] = section_raw(sizes, dry, device)
            elif section == "service":
                summary[section] = section_service(sizes, dry, device, work,
                                                   summary.get("raw"))
            elif section == "decode":
                summary[section] = section_decode(sizes, work)
            elif section == "memory":
                summary[section] = section_memory(sizes, dry, device,
                                                  (summary.get("decode") or {}).get("rows"))
        except Exception:  # noqa: BLE001 - one section failing must not lose the others
            summary["errors"][section] = traceback.format_exc()[-3000:]
            print(summary["errors"][section], file=sys.stderr, flush=True)
        summary["section_seconds"][section] = time.perf_counter() - began
        if device.type == "cuda":
            torch.cuda.empty_cache()
        summary["seconds"] = time.perf_counter() - started
        summary["targets"] = targets(summary)
        # Written after every section: a run stopped at its limit keeps what it measured.
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        (args.out / "summary.md").write_text(markdown(summary))
    print(markdown(summary), flush=True)
    return summary


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-child":
        serve_child(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the summary")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    args = parser.parse_args()
    summary = run(args)
    sys.exit(1 if summary["errors"] else 0)


if __name__ == "__main__":
    main()
