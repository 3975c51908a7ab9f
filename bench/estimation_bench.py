"""Accuracy without labels, judged on shifts, seeds and a model nobody tuned it on.

One run:

1. Renders the windows once (the model-independent part): clean traffic, every held-out
   shift family of :mod:`simulations.shifts` at each level (geometry, colour, time, codec
   and resolution, real re-encodes), and the three scenarios that are not camera faults
   (``mirror``: concept drift; ``class_prior_shift``; ``novel_class``), two consecutive
   windows each, as encoded files decoded by the service's decoder.
2. For each model, vidmon's R(2+1)D and a team's own plain 3D CNN saved as TorchScript
   (``TeamC3D``, not vidmon's architecture), and each training seed: trains it on the
   synthetic dataset (cached in ``--workdir``), fits its estimators on the corruption bank
   exactly as ``vidmon train`` does, and judges every window with the report's own
   function (:func:`monitor.estimation.judgment.label_free_accuracy`).
3. Prints, per family and per model and seed, and over everything in one table: where a
   number was given, its mean absolute error (with a bootstrap 95 % interval), its
   interval's mean width and coverage (Wilson 95 %); whether "cannot estimate" was said on
   every window where the number would have been more than 10 points off; and whether the
   accuracy trigger fired within two windows on every shift that cost 10 points or more,
   from the estimate or from the labels the report asked for (drawn from the second
   window).

The thresholds of :class:`~monitor.estimation.judgment.EstimationPolicy` were chosen on
``--tune`` (vidmon's model, seed 0, the corruption bank's own families held out one at a
time); the seeds here default to 1, 2 and 3. ``--dump FILE`` writes every window's numbers
as JSON.

Usage: python bench/estimation_bench.py [--seeds 1 2 3] [--models vidmon team]
       [--window-size 300] [--workdir DIR] [--dump FILE] [--tune]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.card import KINETICS_MEAN, KINETICS_STD, ModelCard  # noqa: E402
from monitor.drift import embedding_drift_within_and_pooled  # noqa: E402
from monitor.estimation import COMBINED, Outputs, fit_estimator  # noqa: E402
from monitor.estimation.judgment import (  # noqa: E402
    EstimationPolicy,
    class_mix_shift,
    label_free_accuracy,
)
from monitor.estimation.labeled import wilson_interval  # noqa: E402
from monitor.estimation.reweighting import METHOD as REWEIGHTED  # noqa: E402
from monitor.report import ReportPolicy  # noqa: E402
from monitor.settings import RetrainSettings, TrainSettings  # noqa: E402
from monitor.video import DecodeLimits, decode_video  # noqa: E402
from simulations.scenarios import SCENARIOS, Scenario, build  # noqa: E402
from simulations.shifts import HELD_OUT, encode  # noqa: E402
from simulations.traffic import draw_event  # noqa: E402
from training.corruptions import CORRUPTIONS  # noqa: E402
from training.datasets import VideoDataset, load_clips  # noqa: E402
from training.estimation import outputs_of, shifted_sets  # noqa: E402
from training.job import model_config_for, synthetic_data  # noqa: E402
from training.modelfile import load_network, vidmon_network  # noqa: E402
from training.synthetic import CLASS_NAMES, ClipSpec  # noqa: E402
from training.train import predict, train_model  # noqa: E402

SPEC = ClipSpec(16, 32, 32)
FPS = 8.0
CARD = ModelCard(labels=CLASS_NAMES, frames=16, height=32, width=32, mean=KINETICS_MEAN,
                 std=KINETICS_STD, name="bench", embedding_method="embed")
OTHER = ("mirror", "class_prior_shift", "novel_class")
COSTLY = 0.10  # a shift that costs this much accuracy must trigger within two windows
OFF = 0.10  # a number this far off must have been "cannot estimate"
DROP = RetrainSettings().accuracy_drop


class TeamC3D(nn.Module):
    """A team's own classifier, not vidmon's architecture: plain 3 x 3 x 3 convolutions
    (C3D-style), global average pooling, a 64-wide embedding and a linear head."""

    def __init__(self, classes: int = len(CLASS_NAMES)) -> None:
        super().__init__()

        def block(cin: int, cout: int, pool: tuple[int, int, int]) -> list[nn.Module]:
            return [nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout),
                    nn.ReLU(), nn.MaxPool3d(pool)]

        self.features = nn.Sequential(*block(3, 16, (1, 2, 2)), *block(16, 32, (2, 2, 2)),
                                      *block(32, 64, (2, 2, 2)))
        self.embedding = nn.Linear(64, 64)
        self.head = nn.Linear(64, classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.embedding(self.features(x).mean(dim=(2, 3, 4))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


@dataclass
class Window:
    """A rendered window: decoded clips and the labels of what they show (-1: a class
    the model does not know)."""

    family: str
    group: str
    level: float | None
    clips: np.ndarray
    labels: np.ndarray


def _decoded(data: bytes) -> np.ndarray:
    return decode_video(data, CARD, DecodeLimits.trusted(1000)).clips[0]


def render_windows(size: int, folder: Path, tune: bool = False
                   ) -> dict[tuple[str, float | None], list[Window]]:
    """Two consecutive windows of every family and level (cached as npz). With ``tune``,
    the windows thresholds are tuned on instead: the corruption bank's own families, each
    at its levels (judged by estimators fitted without that family)."""
    jobs: list[tuple[str, str, float | None]]
    if tune:
        jobs = [("none", "bank", None)] + [(c.family, "bank", level)
                                           for c in CORRUPTIONS.values() for level in c.levels]
    else:
        jobs = [("none", "clean", None)]
        jobs += [(s.name, s.group, level) for s in HELD_OUT.values() for level in s.levels]
        jobs += [(name, "scenario", None) for name in OTHER]
    prefix, first_seed = ("tune-", 777) if tune else ("", 0)
    windows: dict[tuple[str, float | None], list[Window]] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for index, (family, group, level) in enumerate(jobs):
        started = time.perf_counter()
        pair = []
        for part in (0, 1):
            path = folder / f"{prefix}{family}-{level}-{part}-{size}.npz"
            if path.is_file():
                with np.load(path) as saved:
                    clips, labels = saved["clips"], saved["labels"]
            else:
                clips, labels = _render(family, level, size,
                                        seed=first_seed + 1000 * index + part, bank=tune)
                np.savez(path, clips=clips, labels=labels)
            pair.append(Window(family, group, level, clips, labels))
        windows[(family, level)] = pair
        print(f"  rendered {family} {'' if level is None else level} "
              f"({time.perf_counter() - started:.0f}s)", flush=True)
    return windows


def _render(family: str, level: float | None, size: int, seed: int, bank: bool = False
            ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clips, labels = [], []
    scenario: Scenario = build(family) if family in SCENARIOS and not bank else Scenario()
    for _ in range(size):
        if bank and family in CORRUPTIONS:
            event = draw_event(scenario, rng, 1.0, SPEC, FPS)
            frames = event.frames if family == "compression" else \
                CORRUPTIONS[family](event.frames, float(level), rng)
            options = {"crf": str(int(level)), "preset": "veryfast"} \
                if family == "compression" else None
            data, label = encode(frames, event.fps, options=options), event.label
        elif family in HELD_OUT:
            label = CLASS_NAMES[int(rng.integers(len(CLASS_NAMES)))]
            recording = HELD_OUT[family].render(label, rng, SPEC, FPS, float(level))
            data, label = recording.data, recording.label
        else:
            event = draw_event(scenario, rng, 1.0, SPEC, FPS)
            data, label = encode(event.frames, event.fps), event.label
        clips.append(_decoded(data))
        labels.append(CLASS_NAMES.index(label) if label in CLASS_NAMES else -1)
    return np.stack(clips), np.array(labels)


@dataclass
class Model:
    """A trained model with what judging it needs."""

    name: str
    seed: int
    network: nn.Module
    reference: Outputs
    estimator: object
    reference_accuracy: float
    shifted: list
    head_data: tuple[np.ndarray, np.ndarray]
    videos: np.ndarray

    def without(self, family: str) -> object:
        """The estimators fitted without one corruption family."""
        if family not in {s.family for s in self.shifted}:
            return self.estimator
        return fit_estimator(self.reference, [s for s in self.shifted if s.family != family],
                             len(CLASS_NAMES), head_data=self.head_data, seed=self.seed,
                             groups=self.videos)


def train_and_fit(kind: str, seed: int, workdir: Path) -> Model:
    """Train (or load) one model on the synthetic dataset and fit its estimators."""
    train = TrainSettings(clips_per_class=120, test_clips_per_class=30, epochs=8, seed=0,
                          synthetic_dir=workdir / "synthetic-data")
    dataset = VideoDataset.open(synthetic_data(train))
    card = CARD
    train_part = load_clips(dataset.split("train"), card, description="decoding training")
    test_part = load_clips(dataset.split("held_out"), card, description="decoding held-out")
    weights = workdir / f"{kind}-seed{seed}.pt"
    torch.manual_seed(seed)
    if kind == "vidmon":
        network = vidmon_network(model_config_for(train, len(CLASS_NAMES))).network
    else:
        scripted = workdir / f"{kind}-seed{seed}-init.ts"
        torch.jit.save(torch.jit.script(TeamC3D()), str(scripted))
        network = load_network(scripted, card).network  # through the TorchScript path
    if weights.is_file():
        network.load_state_dict(torch.load(weights, weights_only=True))
    else:
        network = train_model(network, card, (train_part.clips, train_part.labels),
                              (test_part.clips, test_part.labels), epochs=train.epochs,
                              seed=seed).model
        torch.save(network.state_dict(), weights)
    network.eval()
    outputs = predict(network, card, test_part.clips)
    reference = outputs_of(outputs, test_part.clips, test_part.labels)
    head_data = (predict(network, card, train_part.clips).embeddings, train_part.labels)
    shifted = shifted_sets(network, card, test_part.clips, test_part.labels,
                           CORRUPTIONS.values(), seed)
    estimator = fit_estimator(reference, shifted, len(CLASS_NAMES), head_data=head_data,
                              seed=seed, groups=test_part.videos)
    return Model(kind, seed, network, reference, estimator, reference.accuracy, shifted,
                 head_data, test_part.videos)


@dataclass
class Judged:
    """One window's truth and what the report would have said."""

    model: str
    seed: int
    family: str
    group: str
    level: float | None
    part: int
    truth: float
    reference_accuracy: float
    estimable: bool
    value: float | None
    low: float | None
    high: float | None
    would_be: float  # the headline had it been given regardless
    reason: str
    labels_needed: int | None
    domain_auc: float | None
    effective_rows: float | None
    class_mix: tuple[float, float]
    embedding_flagged: tuple[bool, bool]  # the report's embedding test: within classes, pooled
    methods: dict[str, list[float]] = field(default_factory=dict)


def judge(model: Model, window: Window, part: int, policy: EstimationPolicy,
          estimator: object | None = None) -> Judged:
    outputs = outputs_of(predict(model.network, CARD, window.clips), window.clips,
                         window.labels)
    result = label_free_accuracy(model.reference, outputs, estimator or model.estimator,
                                 policy)
    # The input-drift question on the same window, at the level a report gives the
    # embedding family (alpha split over its three default families).
    drift = embedding_drift_within_and_pooled(
        model.reference.embeddings, outputs.embeddings, alpha=ReportPolicy().family_alpha,
        strata=(model.reference.predicted.astype(str), outputs.predicted.astype(str)))
    estimates = result.estimates
    would_be = ((estimates[COMBINED].value + estimates[REWEIGHTED].value) / 2
                if COMBINED in estimates and REWEIGHTED in estimates else float("nan"))
    e = result.estimate
    return Judged(model.name, model.seed, window.family, window.group, window.level, part,
                  outputs.accuracy, model.reference_accuracy, result.estimable,
                  None if e is None else e.value, None if e is None else e.low,
                  None if e is None else e.high, would_be, result.reason,
                  result.labels_needed, result.domain_auc, result.effective_rows,
                  class_mix_shift(model.reference.probabilities, outputs.probabilities),
                  (drift.within.drifted, drift.pooled.drifted),
                  {m: [v.value, v.low, v.high] for m, v in estimates.items()})


def trigger_fires(first: Judged, second: Judged, second_correct: np.ndarray,
                  rng: np.random.Generator) -> bool:
    """Whether the accuracy trigger (upper end below reference - drop) fires on the first
    window's estimate, or on the second's estimate, or on the labels the first asked for,
    drawn uniformly from the second window."""
    bar = first.reference_accuracy - DROP
    if first.estimable and first.high is not None and first.high < bar:
        return True
    if second.estimable and second.high is not None and second.high < bar:
        return True
    if not first.estimable and first.labels_needed:
        n = min(first.labels_needed, len(second_correct))
        drawn = rng.choice(second_correct, size=n, replace=False)
        return wilson_interval(float(drawn.sum()), n)[1] < bar
    return False


def _mae_interval(errors: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    if not len(errors):
        return float("nan"), float("nan")
    boot = rng.choice(errors, size=(2000, len(errors))).mean(axis=1)
    return float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))


def summarise(rows: list[Judged], fired: dict[tuple, bool], label: str,
              rng: np.random.Generator) -> str:
    """One line of the targets for ``rows``."""
    given = [r for r in rows if r.estimable]
    errors = np.array([abs(r.value - r.truth) for r in given])
    covered = sum(r.low <= r.truth <= r.high for r in given)
    widths = np.array([r.high - r.low for r in given])
    off = [r for r in rows if not math.isnan(r.would_be) and abs(r.would_be - r.truth) > OFF]
    missed_off = [r for r in off if r.estimable]
    costly = {k: v for k, v in fired.items() if k in {(r.model, r.seed, r.family, r.level)
                                                      for r in rows}}
    low, high = _mae_interval(errors, rng)
    cover_low, cover_high = wilson_interval(covered, len(given)) if given else (np.nan, np.nan)
    return (f"{label:<24}{len(rows):>5}{len(given):>6}"
            f"{100 * errors.mean() if len(given) else float('nan'):>7.1f} "
            f"[{100 * low:4.1f},{100 * high:5.1f}]"
            f"{100 * widths.mean() if len(given) else float('nan'):>7.1f}"
            f"{covered / len(given) if given else float('nan'):>7.2f} "
            f"[{cover_low:.2f},{cover_high:.2f}]"
            f"{len(off) - len(missed_off):>5}/{len(off):<4}"
            f"{sum(costly.values()):>5}/{len(costly):<4}"
            f"{sum(r.embedding_flagged[0] for r in rows):>8}/"
            f"{sum(r.embedding_flagged[1] for r in rows)}/"
            f"{sum(any(r.embedding_flagged) for r in rows)} of {len(rows)}")


HEADER = (f"{'':<24}{'wins':>5}{'given':>6}{'MAE':>7} {'[95 %]':<12}{'width':>7}"
          f"{'cover':>7} {'[95 %]':<12}{'>10 off: said':>14}{'costly: fired':>14}"
          f"{'emb. drift w/p/either':>23}")


def run(args: argparse.Namespace) -> list[Judged]:
    started = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"rendering windows of {args.window_size} clips (cached in {args.workdir})")
    windows = render_windows(args.window_size, args.workdir / "windows", tune=args.tune)
    if args.tune:
        args.models, args.seeds = ["vidmon"], [0]
    policy = EstimationPolicy()
    rows: list[Judged] = []
    fired: dict[tuple, bool] = {}
    rng = np.random.default_rng(0)
    for kind in args.models:
        for seed in args.seeds:
            t = time.perf_counter()
            model = train_and_fit(kind, seed, args.workdir)
            print(f"{kind} seed {seed}: reference accuracy {model.reference_accuracy:.3f} "
                  f"({time.perf_counter() - t:.0f}s to train and fit)", flush=True)
            for key, pair in windows.items():
                estimator = model.without(key[0]) if args.tune else None
                first, second = (judge(model, w, i, policy, estimator)
                                 for i, w in enumerate(pair))
                rows += [first, second]
                if model.reference_accuracy - first.truth >= COSTLY:
                    correct = (predict(model.network, CARD, pair[1].clips).labels
                               == pair[1].labels).astype(float)
                    fired[(kind, seed, *key)] = trigger_fires(first, second, correct, rng)
    print(f"\nlabel-free accuracy on windows of {args.window_size} clips; 'given': a number "
          "was given (else 'cannot estimate');\nMAE and width in accuracy points over the "
          "windows given a number; cover: share inside the 95 % interval;\n'>10 off: said': "
          "windows whose number would have been > 10 points off that said cannot estimate;"
          "\n'costly: fired': shifts costing >= 10 points whose accuracy trigger fired "
          "within two windows;\n'emb. drift': windows the embedding test flagged within "
          "classes / pooled / either (the input-drift question, at a report's level)")
    print(HEADER)
    families = dict.fromkeys(r.family for r in rows)
    for family in families:
        print(summarise([r for r in rows if r.family == family], fired, family, rng))
    print()
    for kind in args.models:
        for seed in args.seeds:
            print(summarise([r for r in rows if r.model == kind and r.seed == seed], fired,
                            f"{kind} seed {seed}", rng))
    covariate = [r for r in rows if r.family not in ("mirror",)]
    print()
    print(summarise(covariate, fired, "all but mirror", rng))
    print(summarise(rows, fired, "everything", rng))
    print(f"\n{time.perf_counter() - started:.0f}s in all")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--models", nargs="+", default=["vidmon", "team"],
                        choices=["vidmon", "team"])
    parser.add_argument("--window-size", type=int, default=300)
    parser.add_argument("--workdir", type=Path, default=Path("bench-output/estimation"))
    parser.add_argument("--dump", type=Path, default=None, help="every window's numbers")
    parser.add_argument("--tune", action="store_true",
                        help="the tuning set instead: vidmon's model, seed 0, the corruption "
                             "bank's families each held out of the fit")
    args = parser.parse_args()
    rows = run(args)
    if args.dump:
        args.dump.write_text(json.dumps([r.__dict__ for r in rows], indent=1, default=str))


if __name__ == "__main__":
    main()
