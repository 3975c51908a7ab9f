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
- ``combined``: the estimators averaged with weights inversely proportional to their mean
  squared error on corruption families each was not fitted on.

Each interval widens a method's sampling error by how far that method was off on families
held out of its fit (leave-one-family-out at fitting time), so an estimator that cannot
see a kind of shift says so in its width.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.special import ndtr, ndtri

from monitor.drift.performance import ConfidenceCalibration, fit_confidence_calibration
from monitor.estimation.base import Estimate, Outputs, with_interval
from monitor.estimation.heads import AgreementHeads, fit_heads
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
COMBINED = "combined"
JSON_FILE = "accuracy_estimator.json"
ARRAYS_FILE = "accuracy_estimator.npz"
_PROBIT_CLIP = 1e-3
AGREEMENT = SIGNAL_NAMES.index("head_agreement")


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
    spreads: dict[str, float]
    weights: dict[str, float]
    families: tuple[str, ...]

    def point_estimates(self, outputs: Outputs) -> dict[str, float]:
        """Each method's accuracy estimate for a window, without intervals."""
        if len(outputs) == 0:
            raise ValueError("the window has no predictions")
        confidence = outputs.confidence
        signals = clip_signals(outputs, self.basis, self.heads)
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

    def estimate(self, outputs: Outputs) -> dict[str, Estimate]:
        """Every method's estimate with its interval, and the combined one."""
        values = self.point_estimates(outputs)
        combined = sum(self.weights[m] * values[m] for m in METHODS)
        values[COMBINED] = float(combined)
        return {m: with_interval(m, v, self.spreads[m], len(outputs)) for m, v in values.items()}

    def save(self, folder: str | Path) -> None:
        """Write the estimator as JSON (scalars) and npz (arrays) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / JSON_FILE).write_text(json.dumps({
            "reference_accuracy": self.reference_accuracy,
            "reference_confidence": self.reference_confidence,
            "atc_threshold": self.atc_threshold, "line": list(self.line),
            "error_intercept": self.error_model.intercept, "spreads": self.spreads,
            "weights": self.weights, "families": list(self.families)}, indent=2))
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
                tuple(meta["line"]), meta["spreads"], meta["weights"], tuple(meta["families"]))


def _fit_shift_models(signals: list[np.ndarray], correct: list[np.ndarray],
                      agreement: np.ndarray, accuracy: np.ndarray
                      ) -> tuple[ErrorModel, tuple[float, float]]:
    """The two estimators fitted on shifted windows: error model and agreement line. The
    clean reference (the first window) weighs as much as all shifted windows together, so
    the error model stays calibrated where most traffic is."""
    weights = np.concatenate([np.full(len(c), max(len(signals) - 1, 1) if i == 0 else 1.0)
                              for i, c in enumerate(correct)])
    model = fit_error_model(np.concatenate(signals), np.concatenate(correct), weights)
    return model, fit_line(agreement, accuracy)


def fit_estimator(reference: Outputs, shifted: Sequence[ShiftedSet], n_classes: int, *,
                  head_data: tuple[np.ndarray, np.ndarray] | None = None,
                  seed: int = 0) -> AccuracyEstimator:
    """Fit every estimator on labeled ``reference`` outputs and their corrupted copies
    (``shifted``, at least two families). ``head_data`` (embeddings, true classes) trains
    the agreement heads, by default the reference itself: the model's own training data is
    better, since the heads then agree on the reference as they will on clean traffic."""
    families = tuple(dict.fromkeys(s.family for s in shifted))
    if reference.labels is None or any(s.outputs.labels is None for s in shifted):
        raise ValueError("fitting needs true labels on the reference and every shifted set")
    if len(families) < 2:
        raise ValueError("fitting needs corrupted windows of at least two families")
    embeddings, labels = head_data or (reference.embeddings, reference.labels)
    heads = fit_heads(embeddings, labels, n_classes, seed=seed)
    basis = fit_basis(reference, n_classes)
    ref_correct = reference.correct
    calibration = fit_confidence_calibration(reference.confidence, ref_correct)
    windows = [reference, *(s.outputs for s in shifted)]
    window_family = ["", *(s.family for s in shifted)]
    signals = [clip_signals(w, basis, heads) for w in windows]
    correct = [w.correct for w in windows]
    accuracy = np.array([c.mean() for c in correct])
    agreement = np.array([s[:, AGREEMENT].mean() for s in signals])
    provisional = AccuracyEstimator(
        float(ref_correct.mean()), float(reference.confidence.mean()),
        atc_threshold(atc_score(reference.probabilities), ref_correct), calibration, basis,
        heads, *_fit_shift_models(signals, correct, agreement, accuracy),
        spreads={}, weights={}, families=families)
    residuals = {m: [] for m in METHODS}
    for family in families:
        # Held out: the fitted estimators are refitted without this family, then judged on it.
        keep = [i for i, f in enumerate(window_family) if f != family]
        error_model, line = _fit_shift_models([signals[i] for i in keep],
                                              [correct[i] for i in keep], agreement[keep],
                                              accuracy[keep])
        fold = replace(provisional, error_model=error_model, line=line)
        for i, f in enumerate(window_family):
            if f == family:
                values = fold.point_estimates(windows[i])
                for m in METHODS:
                    residuals[m].append(values[m] - accuracy[i])
    mse = {m: float(np.mean(np.square(r))) for m, r in residuals.items()}
    inverse = {m: 1.0 / max(v, 1e-6) for m, v in mse.items()}
    weights = {m: inverse[m] / sum(inverse.values()) for m in METHODS}
    combined = sum(weights[m] * np.array(residuals[m]) for m in METHODS)
    spreads = {**{m: float(np.sqrt(v)) for m, v in mse.items()},
               COMBINED: float(np.sqrt(np.mean(np.square(combined))))}
    return replace(provisional, spreads=spreads, weights=weights)
