"""Bring-your-own-model costs: time to register, and answer time for a 20-second video.

One run, on this machine's CPU (or ``--device cuda``):
- an R(2+1)D-18 state_dict in torchvision's layout (random weights; weights do not change
  the cost) with the README's Kinetics-style card (16 frames of 112 x 112 after a 128 short
  side, 15 fps, stride 2), or ``--model tiny`` for vidmon's small network;
- ``vidmon register`` on ``--reference`` labeled 320 x 240, 30 fps videos of 2 s, timed;
- a real service on 127.0.0.1: median answer time of a 20 s video (up to
  ``VIDMON_SERVE__MAX_CLIPS_PER_VIDEO`` clips) and of a 2 s video (one clip), and their ratio.

Usage: python bench/own_model_bench.py [--reference 12] [--repeats 3] [--model tiny]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' media helpers

import httpx
import numpy as np
import torch

from monitor.settings import ServeSettings, Settings  # noqa: E402
from serving.app import create_app
from serving.background import running_server
from tests.media import COLOURS, colour_clip
from tests.torchvision_layout import TorchvisionR2Plus1D18
from training.model import ModelConfig, R2Plus1D
from training.register import register_model
from training.registry import RegistrySource
from training.video_io import write_video

KINETICS_CARD = {"frames": 16, "height": 112, "width": 112, "resize": {"short_side": 128},
                 "sampling": {"fps": 15, "stride": 2}, "mean": [0.43216, 0.394666, 0.37645],
                 "std": [0.22803, 0.22145, 0.216989], "embedding_layer": "avgpool"}


def video(label: str, seconds: float, fps: float, folder: Path, seed: int) -> Path:
    clip = colour_clip(label, np.random.default_rng(seed), int(seconds * fps), 240, 320)
    return write_video(clip, folder / f"{label}-{seed}-{seconds}s.mp4", fps=fps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=int, default=12, help="reference videos")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", choices=["r2plus1d_18", "tiny"], default="r2plus1d_18")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="vidmon-own-bench-"))
    labels = sorted(COLOURS)
    if args.model == "tiny":
        config, card = ModelConfig(num_classes=3), {**KINETICS_CARD, "embedding_layer": None}
    else:
        config, card = ModelConfig.r2plus1d_18(3), KINETICS_CARD
    torch.manual_seed(0)
    weights = (TorchvisionR2Plus1D18(3) if args.model == "r2plus1d_18" else R2Plus1D(config))
    torch.save(weights.state_dict(), root / "model.pth")
    (root / "card.json").write_text(json.dumps({**card, "labels": labels}))
    for i in range(args.reference):
        (root / "reference" / labels[i % 3]).mkdir(parents=True, exist_ok=True)
        video(labels[i % 3], 2.0, 30.0, root / "reference" / labels[i % 3], seed=i)
    settings = Settings(
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        mlflow_artifacts_dir=root / "mlartifacts", database_url=f"sqlite:///{root / 'v.db'}",
        clip_dir=root / "clips", evidently_workspace=None, model_name="bench-own",
        serve=ServeSettings(device=args.device, spool_path=root / "spool.jsonl",
                            clip_sample_rate=0.0))
    outcome = register_model(settings, root / "model.pth", root / "card.json",
                             root / "reference")
    print(f"model {args.model} ({sum(p.numel() for p in R2Plus1D(config).parameters()):,} "
          f"parameters), {torch.get_num_threads()} threads")
    print(f"register: {outcome.seconds:.1f} s for {outcome.reference_rows} reference videos "
          f"(2 s, 320x240, 30 fps), {outcome.seconds / outcome.reference_rows:.2f} s/video")
    long_video = video("green", 20.0, 30.0, root, seed=99).read_bytes()
    short_video = video("green", 2.0, 30.0, root, seed=98).read_bytes()
    timings: dict[str, list[float]] = {"20 s": [], "2 s": []}
    clips: dict[str, int] = {}
    with running_server(create_app(settings, RegistrySource(settings))) as url, \
            httpx.Client(base_url=url, timeout=600) as client:
        for _ in range(args.repeats):
            for name, data in (("20 s", long_video), ("2 s", short_video)):
                started = time.perf_counter()
                response = client.post("/v1/predict?segments=true",
                                       files={"file": ("v.mp4", data, "video/mp4")})
                timings[name].append(time.perf_counter() - started)
                response.raise_for_status()
                clips[name] = response.json()["clips"]
    long_s, short_s = (statistics.median(timings[k]) for k in ("20 s", "2 s"))
    print(f"answer, 20 s video ({clips['20 s']} clips, {len(long_video) // 1024} KB): "
          f"{long_s:.2f} s median of {args.repeats}")
    print(f"answer, 2 s video ({clips['2 s']} clip): {short_s:.2f} s median")
    print(f"20 s / 2 s answer time = {long_s / short_s:.2f}x for {clips['20 s']}x the clips")


if __name__ == "__main__":
    main()
