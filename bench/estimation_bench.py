"""Accuracy estimation under shift, held out by family, and the label budget, in one run.

1. Trains the demo's model (synthetic dataset of mp4 files, the same functions ``vidmon
   train`` runs; cached in ``--workdir``) and renders its reference clips under every
   corruption family.
2. For each family, fits the estimators *without that family* (leave-one-family-out) and
   estimates fresh windows of it at several strengths: events drawn by the simulator,
   recorded through the scenario of that name where one exists (else the corruption),
   encoded as mp4 and decoded by the service's decoder. Prints every estimator's mean and
   worst absolute error per family, CBPE beside the others.
3. Labels needed for a +-3-point 95 % interval of a window's accuracy, uniform sampling vs
   the labeling queue's importance sampling (Horvitz-Thompson difference estimator), on
   clean, blur and mirror windows; the queue with no labels yet, and with the error
   estimates sharpened by the labels of the window before (what the service does).

Usage: python bench/estimation_bench.py [--windows 2] [--window-size 200] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from monitor.card import ModelCard
from monitor.estimation import COMBINED, METHODS, Outputs, fit_estimator
from monitor.estimation.labeled import (
    importance_weighted_accuracy,
    inclusion_probabilities,
)
from monitor.labeling import sharpened_p_wrong
from monitor.settings import MonitorSettings, TrainSettings
from monitor.video import DecodeLimits, decode_video
from simulations.scenarios import SCENARIOS, Scenario, build
from simulations.traffic import draw_event
from training.corruptions import CORRUPTIONS
from training.datasets import VideoDataset, load_clips
from training.estimation import outputs_of, shifted_sets
from training.job import model_config_for, synthetic_data, training_card
from training.modelfile import vidmon_network
from training.synthetic import CLASS_NAMES, ClipSpec
from training.train import predict, train_model
from training.video_io import write_video

# Levels of each family in the benchmark's windows: the scenario's parameter where the
# simulator has that scenario, the corruption's level otherwise.
SCENARIO_LEVELS: dict[str, tuple[str, tuple[float, ...]]] = {
    "blur": ("radius", (1, 2, 3)),
    "sensor_noise": ("sigma", (10.0, 20.0, 30.0)),
    "lighting": ("shift", (-70.0, 45.0, 80.0)),
    "frame_rate_drop": ("factor", (2, 3, 4)),
    "camera_shake": ("pixels", (1, 2, 3)),
    "occlusion": ("fraction", (0.15, 0.3, 0.4)),
}
OTHER_FAMILIES = ("class_prior_shift", "novel_class", "mirror")
HISTORY_LABELS = 60  # labels back from the window before, for the queue+history column
QUEUE_FLOOR = MonitorSettings().queue_floor
PRIOR_STRENGTH = MonitorSettings().queue_prior_strength
SPEC = ClipSpec(16, 32, 32)


def trained_model(workdir: Path, train: TrainSettings):
    """The demo-sized model, its card, reference clips and training embeddings (cached)."""
    dataset = VideoDataset.open(synthetic_data(train), seed=train.seed)
    card = training_card(train, dataset.labels)
    train_part = load_clips(dataset.split("train"), card, description="decoding training")
    test_part = load_clips(dataset.split("held_out"), card, description="decoding held-out")
    network = vidmon_network(model_config_for(train, len(card.labels))).network
    weights = workdir / "model.pt"
    if weights.is_file():
        network.load_state_dict(torch.load(weights, weights_only=True))
    else:
        torch.manual_seed(train.seed)
        network = train_model(network, card, (train_part.clips, train_part.labels),
                              (test_part.clips, test_part.labels), epochs=train.epochs,
                              seed=train.seed).model
        torch.save(network.state_dict(), weights)
    network.eval()
    head_data = (predict(network, card, train_part.clips).embeddings, train_part.labels)
    return network, card, test_part, head_data


def record(frames: np.ndarray, fps: float, card: ModelCard, crf: int = 18) -> np.ndarray:
    """A clip as the service sees it: an mp4 at ``crf``, decoded by the service's decoder."""
    with tempfile.TemporaryDirectory() as tmp:
        data = write_video(frames, Path(tmp) / "event.mp4", fps=fps, quality=crf).read_bytes()
    return decode_video(data, card, DecodeLimits.trusted(1000)).clips[0]


def window(network, card: ModelCard, family: str, level: float | None, size: int,
           seed: int) -> Outputs:
    """``size`` fresh events of one family at one level, with true labels."""
    rng = np.random.default_rng(seed)
    scenario: Scenario = Scenario()
    if family in SCENARIO_LEVELS:
        name, _ = SCENARIO_LEVELS[family]
        scenario = build(family, **{name: level})
    elif family in SCENARIOS:
        scenario = build(family)
    clips, labels = [], []
    for _ in range(size):
        event = draw_event(scenario, rng, 1.0, SPEC, 8.0)
        crf = 18
        if family == "contrast":
            event = replace(event, frames=CORRUPTIONS["contrast"](event.frames, level, rng))
        elif family == "compression":
            crf = int(level)
        clips.append(record(event.frames, event.fps, card, crf))
        # Mirror keeps the true event and flips the picture; a novel class has no index.
        labels.append(card.labels.index(event.label) if event.label in card.labels else -1)
    clips_array = np.stack(clips)
    return outputs_of(predict(network, card, clips_array), clips_array, np.array(labels))


def family_levels(family: str) -> tuple[float | None, ...]:
    if family in SCENARIO_LEVELS:
        return SCENARIO_LEVELS[family][1]
    if family in CORRUPTIONS:
        return CORRUPTIONS[family].levels
    return (None,)


def estimation_table(network, card, reference: Outputs, shifted, head_data, size: int,
                     repeats: int) -> tuple[dict[str, dict[str, list[float]]], dict]:
    """Absolute errors (points) of every method per held-out family, and the windows."""
    errors: dict[str, dict[str, list[float]]] = {}
    windows: dict[str, list[Outputs]] = {}
    full = fit_estimator(reference, shifted, len(card.labels), head_data=head_data)
    for f_index, family in enumerate(["none", *CORRUPTIONS, *OTHER_FAMILIES]):
        started = time.perf_counter()
        held_out = [s for s in shifted if s.family != family]
        estimator = full if len(held_out) == len(shifted) else fit_estimator(
            reference, held_out, len(card.labels), head_data=head_data)
        assert family not in estimator.families
        errors[family] = {m: [] for m in (*METHODS, COMBINED, "covered", "width")}
        windows[family] = []
        for level in family_levels(family):
            for r in range(repeats):
                outputs = window(network, card, family, level, size,
                                 seed=10_000 + 100 * f_index + 10 * r + int(abs(level or 0)))
                windows[family].append(outputs)
                truth = outputs.accuracy
                for method, estimate in estimator.estimate(outputs).items():
                    errors[family][method].append(100 * abs(estimate.value - truth))
                combined = estimator.estimate(outputs)[COMBINED]
                errors[family]["covered"].append(float(combined.low <= truth <= combined.high))
                errors[family]["width"].append(100 * (combined.high - combined.low))
        print(f"  {family}: {len(windows[family])} windows, true accuracy "
              + ", ".join(f"{w.accuracy:.2f}" for w in windows[family])
              + f" ({time.perf_counter() - started:.0f}s)", flush=True)
    return errors, windows


def print_estimation(errors: dict[str, dict[str, list[float]]]) -> None:
    methods = (*METHODS, COMBINED)
    print("\nabsolute error in accuracy points, mean / worst, each family held out of fitting;"
          "\nlast columns: share of windows inside the combined 95 % interval, its mean width")
    print(f"{'family':<18}" + "".join(f"{m:>14}" for m in methods) + f"{'covered':>9}{'width':>7}")
    covariate = [f for f in errors if f in CORRUPTIONS]
    for family, by_method in [*errors.items(), ("covariate (all)", {
            k: [e for f in covariate for e in errors[f][k]] for k in errors[covariate[0]]})]:
        print(f"{family:<18}" + "".join(
            f"{np.mean(by_method[m]):>7.1f} /{np.max(by_method[m]):>5.1f}" for m in methods)
            + f"{np.mean(by_method['covered']):>9.2f}{np.mean(by_method['width']):>7.1f}")


def class_history(before: Outputs, p_wrong: np.ndarray, seed: int = 1
                  ) -> dict[str, tuple[int, int]]:
    """(labeled, wrong) per predicted class from the queue's picks in the window before."""
    pi = inclusion_probabilities(p_wrong, HISTORY_LABELS, QUEUE_FLOOR)
    chosen = np.random.default_rng(seed).random(len(before)) < pi
    wrong = before.correct == 0
    return {str(c): (int(np.sum(chosen & (before.predicted == c))),
                     int(np.sum(chosen & wrong & (before.predicted == c))))
            for c in np.unique(before.predicted)}


def labels_needed(outputs: Outputs, p_wrong: np.ndarray, queue: bool, draws: int,
                  target: float = 0.03, floor: float = QUEUE_FLOOR) -> tuple[int, float]:
    """Fewest expected labels whose estimate lands within ``target`` of the truth in 95 %
    of ``draws`` seeded samples, and the coverage of the method's own interval there."""
    truth = outputs.accuracy
    wrong = 1.0 - outputs.correct
    n = len(outputs)
    rng = np.random.default_rng(0)
    budget = 4
    while budget < n:
        pi = (inclusion_probabilities(p_wrong, budget, floor) if queue
              else np.full(n, budget / n))
        errors, covered = [], 0
        for _ in range(draws):
            selected = rng.random(n) < pi
            estimate = importance_weighted_accuracy(
                p_wrong if queue else np.zeros(n), pi, selected, selected, wrong)
            if estimate is None:  # nothing chosen: no labeled estimate at all
                errors.append(1.0)
                continue
            errors.append(abs(estimate.value - truth))
            covered += estimate.low <= truth <= estimate.high
        if np.quantile(errors, 0.95) <= target:
            return budget, covered / draws
        budget = int(np.ceil(budget * 1.15))
    return n, 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=2, help="windows per family and level")
    parser.add_argument("--window-size", type=int, default=200)
    parser.add_argument("--budget-window", type=int, default=1000,
                        help="predictions in a window of the label-budget comparison")
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--workdir", type=Path, default=Path("bench-output/estimation"))
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.workdir.mkdir(parents=True, exist_ok=True)
    train = TrainSettings(clips_per_class=120, test_clips_per_class=30, epochs=8,
                          synthetic_dir=args.workdir / "synthetic-data")
    network, card, test_part, head_data = trained_model(args.workdir, train)
    reference = outputs_of(predict(network, card, test_part.clips), test_part.clips,
                           test_part.labels)
    print(f"model: reference accuracy {reference.accuracy:.3f} on {len(reference)} clips; "
          f"classes {len(CLASS_NAMES)}")
    shifted = shifted_sets(network, card, test_part.clips, test_part.labels,
                           CORRUPTIONS.values())
    errors, windows = estimation_table(network, card, reference, shifted, head_data,
                                       args.window_size, args.windows)
    print_estimation(errors)

    print(f"\nlabels for a +-3-point 95 % interval on a window of {args.budget_window} "
          f"predictions ({args.draws} seeded draws each)")
    print("(queue+history: the queue's error estimates sharpened by the labels its "
          f"{HISTORY_LABELS} picks in the window before came back with, as the service does)")
    print(f"{'window':<10}{'accuracy':>9}{'uniform':>9}{'queue':>7}{'ratio':>7}"
          f"{'queue+history':>15}{'ratio':>7}{'coverage u/q/q+h':>18}")
    estimator = fit_estimator(reference, shifted, len(card.labels), head_data=head_data)
    for family, level in (("none", None), ("blur", 2), ("mirror", None)):
        outputs = window(network, card, family, level, args.budget_window, seed=77)
        p_wrong = 1.0 - estimator.p_correct(outputs)
        before = window(network, card, family, level, args.budget_window, seed=78)
        sharpened = sharpened_p_wrong(
            p_wrong, [str(c) for c in outputs.predicted],
            class_history(before, 1.0 - estimator.p_correct(before)), PRIOR_STRENGTH)
        uniform, cov_u = labels_needed(outputs, p_wrong, False, args.draws)
        queue, cov_q = labels_needed(outputs, p_wrong, True, args.draws)
        history, cov_h = labels_needed(outputs, sharpened, True, args.draws)
        print(f"{family:<10}{outputs.accuracy:>9.3f}{uniform:>9}{queue:>7}"
              f"{queue / uniform:>7.2f}{history:>15}{history / uniform:>7.2f}"
              f"{cov_u:>8.2f}/{cov_q:.2f}/{cov_h:.2f}")
    print(f"\n{time.perf_counter() - started:.0f}s in all")


if __name__ == "__main__":
    main()
