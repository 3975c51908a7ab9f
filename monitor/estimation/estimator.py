"""Label-free accuracy estimators, fitted once per model version and applied to windows.

Five estimators, each with a 95 % interval, and a combination of them:

- ``cbpe``: confidence calibrated on the reference (NannyML's CBPE); blind to confident
  mistakes.
- ``atc``: Average Thresholded Confidence (Garg et al., ICLR 2022): the threshold on
  negative entropy above which the reference has as many clips as it has right answers;
  a window's estimate is its share of clips above it.
- ``doc``: Difference of Confidences (Guillory et al., 2021): the reference accuracy moved
  by how much mean confidence moved.
- ``agreement``: how often the agreement heads side with the model, mapped to accuracy by
  a line in probit space fitted on corrupted windows (Baek et al., NeurIPS 2022).
- ``error_model``: the mean P(correct) of a logistic error model on per-clip signals,
  fitted on the reference clips re-rendered under a bank of corruptions (performance
  prediction under shift).
- ``combined``: the estimators but CBPE averaged with weights inversely proportional to
  their mean squared error on corruption families each was not fitted on.

Each interval widens a method's sampling error by how far that method was off on families
held out of its fit (leave-one-family-out at fitting time), so an estimator that cannot
see a kind of shift says so in its width. That error is modelled as growing with the
window's *novelty*, how much farther its embeddings lie from the reference class centroids
than the reference's own do: a window like the reference gets a narrow interval, a window
unlike anything in the fit a wide one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.special import ndtr, ndtri

from monitor.drift.performance import ConfidenceCalibration, fit_confidence_calibration
from monitor.estimation.base import COMBINED, HEADLINE, Estimate, Outputs, with_interval
from monitor.estimation.heads import AgreementHeads, fit_heads
from monitor.estimation.judgment import EstimationPolicy, class_mix_shift, cover_reasons
from monitor.estimation.reweighting import reweighted_accuracy
from monitor.estimation.signals import (
    SIGNAL_NAMES,
    Basis,
    ErrorModel,
    clip_signals,
    fit_basis,
    fit_error_model,
)
from monitor.profile import entropy

METHODS: tuple[str, ...] = ("cbpe", "atc", "doc", "agreement", "error_model")
# CBPE is shown but not combined: a calibration of confidence cannot move when the model
# stays confident, and it read 0.998 on windows whose truth ranged from 0.52 to 1.00.
COMBINED_FROM: tuple[str, ...] = ("atc", "doc", "agreement", "error_model")
JSON_FILE = "accuracy_estimator.json"
ARRAYS_FILE = "accuracy_estimator.npz"
_PROBIT_CLIP = 1e-3
AGREEMENT = SIGNAL_NAMES.index("head_agreement")
DISTANCE = SIGNAL_NAMES.index("centroid_distance")


@dataclass(frozen=True)
class ShiftedSet:
    """Labeled outputs of the reference clips under one corruption family and level."""

    family: str
    level: float
    outputs: Outputs


def _probit(p: np.ndarray | float) -> np.ndarray:
    return ndtri(np.clip(p, _PROBIT_CLIP, 1 - _PROBIT_CLIP))


def atc_threshold(scores: np.ndarray, correct: np.ndarray) -> float:
    """The score above which the share of reference clips equals their accuracy."""
    return float(np.quantile(scores, 1.0 - float(np.mean(correct))))


def atc_score(probabilities: np.ndarray) -> np.ndarray:
    """ATC's score: negative entropy, normalised by its maximum."""
    return -entropy(probabilities) / np.log(max(probabilities.shape[1], 2))


def fit_line(agreement: np.ndarray, accuracy: np.ndarray) -> tuple[float, float]:
    """(slope, bias) of probit(accuracy) on probit(agreement) by least squares; the identity
    when the windows do not spread enough to fit one."""
    x, y = _probit(np.asarray(agreement)), _probit(np.asarray(accuracy))
    if len(x) < 3 or np.ptp(x) < 0.05:
        return 1.0, 0.0
    slope, bias = np.polyfit(x, y, 1)
    return float(slope), float(bias)


@dataclass(frozen=True)
class Spread:
    """A method's error on shifts it was not fitted on: ``rms`` over every held-out window,
    and as a root mean square that grows with a window's novelty,
    sqrt(base + slope * novelty)."""

    base: float
    slope: float
    rms: float

    def __call__(self, novelty: float) -> float:
        return float(np.sqrt(self.base + self.slope * max(novelty, 0.0)))


def fit_spread(clean: np.ndarray, novelty: np.ndarray, residuals: np.ndarray) -> Spread:
    """``base``: the mean squared error on held-out clean clips (``clean``); ``slope``: what
    the shifted windows' squared errors (``residuals`` at ``novelty``) add per unit of
    novelty, by least squares kept >= 0."""
    base = float(np.mean(np.square(clean)))
    z = np.maximum(np.asarray(novelty, dtype=float), 0.0)
    excess = np.square(np.asarray(residuals, dtype=float)) - base
    slope = float(max(z @ excess / (z @ z), 0.0)) if z @ z > 0 else 0.0
    everything = np.square(np.r_[clean, residuals])
    return Spread(base, slope, float(np.sqrt(everything.mean())))


def window_novelty(signals: np.ndarray, origin: float) -> float:
    """How much farther, on average, a window's clips lie from their predicted class's
    reference centroid than the reference's own clips do (log-distance units)."""
    return float(signals[:, DISTANCE].mean() - origin)


@dataclass(frozen=True)
class AccuracyEstimator:
    """Everything a model version's estimators need, fitted on its labeled reference."""

    reference_accuracy: float
    reference_confidence: float
    atc_threshold: float
    calibration: ConfidenceCalibration
    basis: Basis
    heads: AgreementHeads
    error_model: ErrorModel
    line: tuple[float, float]
    spreads: dict[str, Spread]
    weights: dict[str, float]
    families: tuple[str, ...]
    novelty_origin: float = 0.0

    def point_estimates(self, outputs: Outputs) -> dict[str, float]:
        """Each method's accuracy estimate for a window, without intervals."""
        return self._point_estimates(outputs, self._signals(outputs))

    def _signals(self, outputs: Outputs) -> np.ndarray:
        if len(outputs) == 0:
            raise ValueError("the window has no predictions")
        return clip_signals(outputs, self.basis, self.heads)

    def _point_estimates(self, outputs: Outputs, signals: np.ndarray) -> dict[str, float]:
        confidence = outputs.confidence
        agreement = signals[:, AGREEMENT].mean()
        slope, bias = self.line
        values = {
            "cbpe": float(self.calibration(confidence).mean()),
            "atc": float((atc_score(outputs.probabilities) > self.atc_threshold).mean()),
            "doc": self.reference_accuracy + float(confidence.mean()) - self.reference_confidence,
            "agreement": float(ndtr(slope * _probit(agreement) + bias)),
            "error_model": float(self.error_model.p_correct(signals).mean()),
        }
        return {k: float(min(max(v, 0.0), 1.0)) for k, v in values.items()}

    def p_correct(self, outputs: Outputs) -> np.ndarray:
        """The error model's P(correct) for every clip."""
        return self.error_model.p_correct(clip_signals(outputs, self.basis, self.heads))

    def estimate(self, outputs: Outputs, reweighted: float | None = None
                 ) -> dict[str, Estimate]:
        """Every method's estimate with its interval, the combined one, and, given the
        ``reweighted`` reference's value, the headline: the mean of the two, with the
        interval its own held-out errors give it (where it would have been given)."""
        signals = self._signals(outputs)
        values = self._point_estimates(outputs, signals)
        combined = sum(w * values[m] for m, w in self.weights.items())
        values[COMBINED] = float(combined)
        if reweighted is not None and HEADLINE in self.spreads:
            values[HEADLINE] = (values[COMBINED] + reweighted) / 2
        novelty = window_novelty(signals, self.novelty_origin)
        return {m: with_interval(m, v, self.spreads[m](novelty), len(outputs))
                for m, v in values.items()}

    def save(self, folder: str | Path) -> None:
        """Write the estimator as JSON (scalars) and npz (arrays) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / JSON_FILE).write_text(json.dumps({
            "reference_accuracy": self.reference_accuracy,
            "reference_confidence": self.reference_confidence,
            "atc_threshold": self.atc_threshold, "line": list(self.line),
            "error_intercept": self.error_model.intercept,
            "spreads": {m: [s.base, s.slope, s.rms] for m, s in self.spreads.items()},
            "weights": self.weights, "families": list(self.families),
            "novelty_origin": self.novelty_origin}, indent=2))
        np.savez(folder / ARRAYS_FILE,
                 calibration_thresholds=self.calibration.thresholds,
                 calibration_values=self.calibration.values,
                 centroids=self.basis.centroids, class_scale=self.basis.class_scale,
                 heads_mean=self.heads.mean, heads_scale=self.heads.scale,
                 heads_weights=self.heads.weights, heads_biases=self.heads.biases,
                 error_mean=self.error_model.mean, error_scale=self.error_model.scale,
                 error_coef=self.error_model.coef)

    @classmethod
    def load(cls, folder: str | Path) -> "AccuracyEstimator | None":
        """The estimator saved in ``folder``, or None when it holds none (a model profiled
        before estimators existed)."""
        folder = Path(folder)
        if not (folder / JSON_FILE).is_file():
            return None
        meta = json.loads((folder / JSON_FILE).read_text())
        with np.load(folder / ARRAYS_FILE, allow_pickle=False) as a:
            return cls(
                meta["reference_accuracy"], meta["reference_confidence"],
                meta["atc_threshold"],
                ConfidenceCalibration(a["calibration_thresholds"], a["calibration_values"]),
                Basis(a["centroids"], a["class_scale"]),
                AgreementHeads(a["heads_mean"], a["heads_scale"], a["heads_weights"],
                               a["heads_biases"]),
                ErrorModel(a["error_mean"], a["error_scale"], a["error_coef"],
                           meta["error_intercept"]),
                tuple(meta["line"]), {m: Spread(*v) for m, v in meta["spreads"].items()},
                meta["weights"], tuple(meta["families"]), meta["novelty_origin"])


def _fit_shift_models(signals: list[np.ndarray], correct: list[np.ndarray],
                      agreement: np.ndarray, accuracy: np.ndarray
                      ) -> tuple[ErrorModel, tuple[float, float]]:
    """The two estimators fitted on shifted windows: error model and agreement line. The
    clean reference (the first window) weighs as much as all shifted windows together, so
    the error model stays close to calibrated where most traffic is. (Moving its intercept
    until it reads the reference's accuracy exactly was tried: it cost more on shifted
    windows than it gained on clean ones.)"""
    weights = np.concatenate([np.full(len(c), max(len(signals) - 1, 1) if i == 0 else 1.0)
                              for i, c in enumerate(correct)])
    model = fit_error_model(np.concatenate(signals), np.concatenate(correct), weights)
    return model, fit_line(agreement, accuracy)


def _fit_parts(reference: Outputs, shifted: Sequence[ShiftedSet], heads: AgreementHeads,
               n_classes: int) -> AccuracyEstimator:
    """Every fitted part of the estimator but its spreads and weights."""
    basis = fit_basis(reference, n_classes)
    ref_correct = reference.correct
    windows = [reference, *(s.outputs for s in shifted)]
    signals = [clip_signals(w, basis, heads) for w in windows]
    correct = [w.correct for w in windows]
    accuracy = np.array([c.mean() for c in correct])
    agreement = np.array([s[:, AGREEMENT].mean() for s in signals])
    return AccuracyEstimator(
        float(ref_correct.mean()), float(reference.confidence.mean()),
        atc_threshold(atc_score(reference.probabilities), ref_correct),
        fit_confidence_calibration(reference.confidence, ref_correct), basis, heads,
        *_fit_shift_models(signals, correct, agreement, accuracy), spreads={}, weights={},
        families=tuple(dict.fromkeys(s.family for s in shifted)),
        novelty_origin=float(signals[0][:, DISTANCE].mean()))


def fit_estimator(reference: Outputs, shifted: Sequence[ShiftedSet], n_classes: int, *,
                  head_data: tuple[np.ndarray, np.ndarray] | None = None,
                  seed: int = 0, groups: np.ndarray | None = None,
                  policy: EstimationPolicy = EstimationPolicy()) -> AccuracyEstimator:
    """Fit every estimator on labeled ``reference`` outputs and their corrupted copies
    (``shifted``, at least two families). ``head_data`` (embeddings, true classes) trains
    the agreement heads, by default the reference itself: the model's own training data is
    better, since the heads then agree on the reference as they will on clean traffic.

    The spreads come from held-out errors: each family estimated by a fit without it, and
    each half of the reference by a fit on the other half (the error on clean traffic);
    the halves split ``groups`` (each clip's video), so no video is on both sides. The
    headline's spread comes from its errors on the held-out windows where ``policy`` would
    have given a number at all."""
    families = tuple(dict.fromkeys(s.family for s in shifted))
    if reference.labels is None or any(s.outputs.labels is None for s in shifted):
        raise ValueError("fitting needs true labels on the reference and every shifted set")
    if len(families) < 2:
        raise ValueError("fitting needs corrupted windows of at least two families")
    embeddings, labels = head_data or (reference.embeddings, reference.labels)
    heads = fit_heads(embeddings, labels, n_classes, seed=seed)
    full = _fit_parts(reference, shifted, heads, n_classes)
    halves = group_halves(len(reference), groups, seed)
    clean = _held_out_errors([(_fit_parts(reference.take(fit_on), shifted, heads, n_classes),
                               reference.take(fit_on), [reference.take(judge)])
                              for fit_on, judge in (halves, halves[::-1])])
    shifts = _held_out_errors([(_fit_parts(reference, [s for s in shifted if s.family != f],
                                           heads, n_classes),
                                reference, [s.outputs for s in shifted if s.family == f])
                               for f in families])
    mse = {m: float(np.mean(np.square(np.r_[clean[m], shifts[m]]))) for m in COMBINED_FROM}
    inverse = {m: 1.0 / max(v, 1e-6) for m, v in mse.items()}
    weights = {m: inverse[m] / sum(inverse.values()) for m in COMBINED_FROM}
    for errors in (clean, shifts):
        errors[COMBINED] = sum(weights[m] * errors[m] for m in COMBINED_FROM)
    spreads = {m: fit_spread(clean[m], shifts["novelty"], shifts[m]) for m in (*METHODS,
                                                                              COMBINED)}
    given = {name: _given(errors, policy) for name, errors in (("clean", clean),
                                                               ("shifts", shifts))}
    if len(given["clean"][0]):  # else a reference too small to reweight: no headline
        spreads[HEADLINE] = fit_spread(given["clean"][0], given["shifts"][1],
                                       given["shifts"][0])
    return replace(full, spreads=spreads, weights=weights)


def _given(errors: dict[str, np.ndarray], policy: EstimationPolicy
           ) -> tuple[np.ndarray, np.ndarray]:
    """The headline's errors and novelties on the held-out windows ``policy`` would have
    given a number for."""
    headline = (errors[COMBINED] + errors["reweighted"]) / 2
    truth = errors["truth"]
    keep = np.array([bool(np.isfinite(reweighted)) and not cover_reasons(
                         auc, rows, combined + t, reweighted + t, (mix_psi, mix_p), policy)
                     for auc, rows, combined, reweighted, t, mix_psi, mix_p in zip(
                         errors["domain_auc"], errors["effective_rows"], errors[COMBINED],
                         errors["reweighted"], truth, errors["mix_psi"], errors["mix_p"])],
                    dtype=bool)
    return headline[keep], errors["novelty"][keep]


def group_halves(n: int, groups: np.ndarray | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two halves of ``n`` rows, whole groups (videos) on one side each: the groups in a
    random order, cut where half of the rows are on each side."""
    keys = np.arange(n) if groups is None else np.unique(
        np.asarray(groups, dtype=object).astype(str), return_inverse=True)[1]
    order = np.random.default_rng(seed).permutation(int(keys.max()) + 1 if n else 0)
    sizes = np.bincount(keys)[order]
    first = set(order[: int(np.searchsorted(np.cumsum(sizes), n / 2)) + 1].tolist()) \
        if n else set()
    mask = np.isin(keys, list(first))
    return np.flatnonzero(mask), np.flatnonzero(~mask)


def _held_out_errors(folds: list[tuple[AccuracyEstimator, Outputs, list[Outputs]]]
                     ) -> dict[str, np.ndarray]:
    """Each method's error (estimate − truth) on every window a fold did not see, the
    reweighted reference's error (the fold's reference reweighted to the window) with its
    domain AUC and effective rows, the window's truth and its novelty."""
    keys = (*METHODS, "reweighted", "domain_auc", "effective_rows", "truth", "novelty",
            "mix_psi", "mix_p")
    errors: dict[str, list[float]] = {k: [] for k in keys}
    for fold, fold_reference, held_out in folds:
        for outputs in held_out:
            signals = fold._signals(outputs)
            values = fold._point_estimates(outputs, signals)
            truth = outputs.accuracy
            errors["novelty"].append(window_novelty(signals, fold.novelty_origin))
            for m in METHODS:
                errors[m].append(values[m] - truth)
            try:
                reweighted = reweighted_accuracy(
                    fold_reference.embeddings, fold_reference.probabilities,
                    fold_reference.correct, outputs.embeddings, outputs.probabilities)
                rows = (reweighted.estimate.value - truth, reweighted.domain_auc,
                        reweighted.effective_rows)
            except ValueError:  # a reference too small to reweight
                rows = (np.nan, np.nan, np.nan)
            for key, value in zip(("reweighted", "domain_auc", "effective_rows"), rows):
                errors[key].append(value)
            errors["truth"].append(truth)
            mix = class_mix_shift(fold_reference.probabilities, outputs.probabilities)
            errors["mix_psi"].append(mix[0])
            errors["mix_p"].append(mix[1])
    return {k: np.array(v) for k, v in errors.items()}
