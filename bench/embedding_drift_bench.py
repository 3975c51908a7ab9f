"""vidmon's embedding-drift test against Evidently's MMD method, measured in one run.

- speed: 10k x 128 per side, ours (median of 5 runs) vs Evidently's ``MMDDriftMethod``
  called directly (one run; its bare cost: the dense (m+n)^2 kernel, without report
  overhead), on cases with and without drift, and whether the two agree on each verdict;
- scale: 100k and 1M x 128 per side, ours alone;
- calibration: false-alarm rate at alpha = 0.05 over ``--trials`` clean windows.

Usage: python bench/embedding_drift_bench.py [--trials 100] [--skip-evidently] [--large 1000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from monitor.drift import embedding_drift

DIM = 128


def mixture(n: int, seed: int, shift: float = 0.0, weights: np.ndarray | None = None,
            noise: float = 1.0) -> np.ndarray:
    """Embeddings like a classifier's: 10 class clusters in 128 dimensions."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(2024).normal(0, 1.0, (10, DIM))
    labels = rng.choice(10, size=n, p=weights)
    return (centres[labels] + rng.normal(0, noise, (n, DIM)) * 0.5 + shift).astype(np.float32)


CASES = {
    "no drift": dict(),
    "mean shift 0.3": dict(shift=0.3),
    "class mix": dict(weights=np.array([0.55] + [0.05] * 9)),
    "noisier": dict(noise=1.6),
}


def evidently_mmd(reference: np.ndarray, current: np.ndarray) -> tuple[bool, float]:
    """Evidently 0.7's MMD drift method with its defaults; returns (drifted, seconds)."""
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import MMDDriftMethod

    columns = [f"e{i}" for i in range(reference.shape[1])]
    ref, cur = pd.DataFrame(reference, columns=columns), pd.DataFrame(current, columns=columns)
    started = time.perf_counter()
    _, drifted, _ = MMDDriftMethod()(cur, ref)
    return bool(drifted), time.perf_counter() - started


def timed(reference: np.ndarray, current: np.ndarray, repeat: int = 1, **kwargs
          ) -> tuple[bool, float, float]:
    """Verdict, p-value and the median seconds of ``repeat`` runs (one seed: the same
    result each time)."""
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = embedding_drift(reference, current, **kwargs)
        seconds.append(time.perf_counter() - started)
    return result.drifted, result.p_value, float(np.median(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--large", type=int, nargs="*", default=[1_000_000],
                        help="rows per side of the largest cases (none: skip them)")
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} torch threads")
    reference = mixture(10_000, seed=1)
    ratios, agreements = [], []
    for name, params in CASES.items():
        current = mixture(10_000, seed=2, **params)
        # ours: the median of 5 runs (a tenth of a second each, so one run is at the
        # mercy of a busy machine); Evidently's single run lasts seconds
        ours, p_value, ours_s = timed(reference, current, repeat=5)
        line = f"10k x {DIM} {name:15s}: ours drift={ours!s:5} p={p_value:.3f} {ours_s:6.3f} s"
        if not args.skip_evidently:
            theirs, theirs_s = evidently_mmd(reference, current)
            ratios.append(theirs_s / ours_s)
            agreements.append(ours == theirs)
            line += (f" | evidently drift={theirs!s:5} {theirs_s:6.2f} s | "
                     f"{theirs_s / ours_s:5.1f}x faster, {'agree' if ours == theirs else 'DISAGREE'}")
        print(line, flush=True)
    if ratios:
        print(f"speed-up over Evidently MMD: min {min(ratios):.1f}x, median "
              f"{float(np.median(ratios)):.1f}x; verdicts agree on {sum(agreements)}/"
              f"{len(agreements)} cases")

    big_reference, big_current = mixture(100_000, seed=3), mixture(100_000, seed=4, shift=0.05)
    drifted, p_value, seconds = timed(big_reference, big_current)
    clean, clean_p, clean_s = timed(big_reference, mixture(100_000, seed=5))
    print(f"100k x {DIM} per side: shift 0.05 drift={drifted} p={p_value:.3f} in {seconds:.1f} s;"
          f" clean drift={clean} p={clean_p:.3f} in {clean_s:.1f} s")

    for size in args.large:
        huge_reference = mixture(size, seed=6)
        drifted, p_value, seconds = timed(huge_reference, mixture(size, seed=7, shift=0.3))
        clean, clean_p, clean_s = timed(huge_reference, mixture(size, seed=8))
        print(f"{size // 1000}k x {DIM} per side: shift 0.3 drift={drifted} p={p_value:.3f} in "
              f"{seconds:.1f} s; clean drift={clean} p={clean_p:.3f} in {clean_s:.1f} s",
              flush=True)

    alarms = 0
    started = time.perf_counter()
    for trial in range(args.trials):
        result = embedding_drift(mixture(2_000, seed=10_000 + trial),
                                 mixture(2_000, seed=20_000 + trial), seed=trial)
        alarms += result.drifted
    print(f"false alarms at alpha 0.05: {alarms}/{args.trials} = {alarms / max(args.trials, 1):.3f} "
          f"(2k x {DIM} per side, {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
