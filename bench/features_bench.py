"""Cost of the video quality features per clip, against the model's forward pass per clip.

Measured in one run: features of one clip at a time (how the reference profile used to do
it), features batched as the service computes them in the model step, and the default
model's forward pass on the same batch. The ratio says whether features could ever be the
bottleneck of serving.

Usage: python bench/features_bench.py [--batch 32] [--seconds 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from monitor.features import pixel_features, quality_features
from monitor.settings import TrainSettings
from monitor.preprocess import to_model_input
from training.job import model_config_for, training_card
from training.model import R2Plus1D
from training.synthetic import CLASS_NAMES, ClipSpec, generate_dataset


def per_clip_ms(step: Callable[[], None], clips_per_step: int, seconds: float) -> float:
    """Milliseconds per clip of ``step``, repeated for about ``seconds``."""
    step()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        done += clips_per_step
    return (time.perf_counter() - started) * 1000 / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    train = TrainSettings()
    spec = ClipSpec(train.frames, train.height, train.width)
    clips, _ = generate_dataset(max(1, args.batch // 10 + 1), seed=0, spec=spec)
    clips = clips[: args.batch]
    pixels = torch.from_numpy(clips)
    model = R2Plus1D(model_config_for(train, len(CLASS_NAMES))).eval()
    card = training_card(train, CLASS_NAMES)

    single = per_clip_ms(lambda: quality_features(clips[0]), 1, args.seconds)

    @torch.inference_mode()
    def batched_step() -> None:  # as the runtime computes them, beside the forward pass
        pixel_features(pixels)

    batched = per_clip_ms(batched_step, len(clips), args.seconds)

    @torch.inference_mode()
    def forward() -> None:
        model(to_model_input(pixels, card))

    model_ms = per_clip_ms(forward, len(clips), args.seconds)
    print(f"clip {spec.frames}x{spec.height}x{spec.width}, batch {len(clips)}, "
          f"{torch.get_num_threads()} threads")
    print(f"quality features, one clip at a time: {single:.3f} ms/clip")
    print(f"quality features, batched (service):  {batched:.3f} ms/clip")
    print(f"model forward, batched:               {model_ms:.3f} ms/clip")
    print(f"features / forward = {batched / model_ms:.2f} (batched), "
          f"{single / model_ms:.2f} (one at a time)")
    assert np.isfinite([single, batched, model_ms]).all()


if __name__ == "__main__":
    main()
