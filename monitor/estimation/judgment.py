"""Accuracy without labels, or an honest "cannot estimate": what a report says, and why.

Every label-free estimate rests on an assumption that a window can break: the fitted
estimators (:mod:`monitor.estimation.estimator`) on the shifts their corruption bank
resembles, the reweighted reference (:mod:`monitor.estimation.reweighting`) on the window
lying where the reference has clips. A number is given only while the window stays where
they can be trusted; otherwise the report says **cannot estimate**, names the reason, and
asks for the labels that would answer instead (:func:`labels_needed`).

The window cannot be estimated when any of these holds (:func:`cover_reasons`):

- it lies outside the reference's cover: the domain classifier tells window from
  reference too well (``max_domain_auc``), or the reweighted reference rests on too few
  clips (``min_effective_rows``);
- the estimators disagree: the fitted combination and the reweighted reference are more
  than ``max_disagreement`` apart, so at least one of them is far off;
- the predicted class mix moved as the prior-shift test calls drift (two-sample
  chi-square p below ``class_mix_level`` and PSI at least ``max_class_mix_psi``): either
  the classes' frequencies changed, which every estimate here survives, or the model now
  sends clips to other classes with confidence (2x playback made a steady shape look like
  a moving one), which none of them can see; only labels tell the two apart.

Otherwise the headline is the mean of the two. Its interval comes from its own errors on
the corruption families held out of the fit, on the windows where a number would have
been given (see :func:`monitor.estimation.estimator.fit_estimator`). The thresholds were
chosen on vidmon's own model (training seed 0) under the corruption bank, and are measured
on other seeds, another architecture and shift families nobody fitted on:
``bench/estimation_bench.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from monitor.drift.classes import homogeneity
from monitor.drift.effect import MIN_PSI, psi
from monitor.estimation.base import COMBINED, HEADLINE, Z95, Estimate, Outputs
from monitor.estimation.reweighting import METHOD as REWEIGHTED
from monitor.estimation.reweighting import reweighted_accuracy

if TYPE_CHECKING:
    from monitor.estimation.estimator import AccuracyEstimator

LABEL_HALF_WIDTH = 0.05  # the labels asked for bound accuracy within +-5 points at 95 %


@dataclass(frozen=True)
class EstimationPolicy:
    """When a window is too far from the reference for a label-free number (chosen on
    the tuning set: see the module's docstring)."""

    max_domain_auc: float = 0.90
    min_effective_rows: float = 40.0
    max_disagreement: float = 0.10
    max_class_mix_psi: float = MIN_PSI  # the prior-shift test's own minimum effect
    class_mix_level: float = 0.01


@dataclass(frozen=True)
class LabelFreeAccuracy:
    """A window's label-free accuracy: the headline ``estimate`` when ``estimable``, else
    the ``reason`` and the labels that would bound accuracy instead; every method's own
    estimate beside it."""

    estimable: bool
    estimate: Estimate | None
    estimates: dict[str, Estimate] = field(default_factory=dict)
    reason: str = ""
    domain_auc: float | None = None
    effective_rows: float | None = None
    labels_needed: int | None = None


def class_mix_shift(reference: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """PSI and two-sample chi-square p-value between the predicted class mixes of two sets
    of class probabilities (n, C)."""
    classes = reference.shape[1]
    counts = np.array([np.bincount(reference.argmax(axis=1), minlength=classes),
                       np.bincount(window.argmax(axis=1), minlength=classes)])
    p_value = homogeneity(counts)[1]
    return psi(counts[0], counts[1]), (1.0 if np.isnan(p_value) else p_value)


def cover_reasons(domain_auc: float, effective_rows: float, combined: float | None,
                  reweighted: float, class_mix: tuple[float, float],
                  policy: EstimationPolicy) -> list[str]:
    """Why no label-free number can be trusted for a window (empty: one can);
    ``class_mix`` is :func:`class_mix_shift`'s (PSI, p-value)."""
    reasons = []
    mix_psi, mix_p = class_mix
    if mix_psi >= policy.max_class_mix_psi and mix_p < policy.class_mix_level:
        reasons.append(f"the predicted class mix moved (PSI {mix_psi:.2f}, p={mix_p:.1e}): "
                       "the classes' frequencies changed, or the model now confuses them; "
                       "only labels tell which")
    if domain_auc > policy.max_domain_auc:
        reasons.append(f"the window lies outside the reference: a classifier tells them "
                       f"apart with AUC {domain_auc:.2f} (> {policy.max_domain_auc:g})")
    if effective_rows < policy.min_effective_rows:
        reasons.append(f"the reweighted reference rests on {effective_rows:.0f} effective "
                       f"clips (< {policy.min_effective_rows:g})")
    if combined is not None and abs(combined - reweighted) > policy.max_disagreement:
        reasons.append(f"the estimators disagree: fitted {combined:.3f}, reweighted "
                       f"{reweighted:.3f}")
    return reasons


def labels_needed(window_rows: int, accuracy_guess: float | None,
                  half_width: float = LABEL_HALF_WIDTH) -> int:
    """Labels drawn uniformly that bound accuracy within ``half_width`` at 95 % (normal
    approximation), for an accuracy near ``accuracy_guess`` (0.5, the worst case, without
    one); at most the window's ``window_rows``. No finite-population correction: the
    labels stand for the traffic, not just this window's rows, and the realized
    accuracy's interval is computed that way (with it, 119 labels of a 300-clip window
    left the labeled interval wider than 5 points, and a 10-point drop unconfirmed)."""
    p = 0.5 if accuracy_guess is None else min(max(accuracy_guess, 0.05), 0.95)
    return int(min(window_rows, math.ceil(Z95 ** 2 * p * (1 - p) / half_width ** 2)))


def label_free_accuracy(reference: Outputs, window: Outputs,
                        estimator: "AccuracyEstimator | None",
                        policy: EstimationPolicy = EstimationPolicy()) -> LabelFreeAccuracy:
    """Judge a window's accuracy without labels against its labeled ``reference``."""
    try:
        reweighted = reweighted_accuracy(reference.embeddings, reference.probabilities,
                                         reference.correct, window.embeddings,
                                         window.probabilities)
    except ValueError as exc:
        estimates = {} if estimator is None else estimator.estimate(window)
        return _cannot(window, estimates, f"the reference cannot be reweighted ({exc})",
                       None, None)
    value = reweighted.estimate.value
    estimates = {} if estimator is None else estimator.estimate(window, value)
    estimates[REWEIGHTED] = reweighted.estimate
    combined = estimates.get(COMBINED)
    reasons = cover_reasons(reweighted.domain_auc, reweighted.effective_rows,
                            None if combined is None else combined.value, value,
                            class_mix_shift(reference.probabilities, window.probabilities),
                            policy)
    if reasons:
        return _cannot(window, estimates, "; ".join(reasons), reweighted.domain_auc,
                       reweighted.effective_rows)
    # Without fitted estimators (a version profiled before they existed) the reweighted
    # reference stands alone, inside its cover; a version fitted without a headline spread
    # gets an interval that holds both estimates.
    headline = (estimates[HEADLINE] if HEADLINE in estimates else
                reweighted.estimate if combined is None else _blend(combined,
                                                                    reweighted.estimate))
    return LabelFreeAccuracy(True, headline, estimates, "", reweighted.domain_auc,
                             reweighted.effective_rows)


def _cannot(window: Outputs, estimates: dict[str, Estimate], reason: str,
            domain_auc: float | None, effective_rows: float | None) -> LabelFreeAccuracy:
    """"Cannot estimate": the estimates stay beside it, the headline goes, labels are
    asked for (sized for the estimate nearest 0.5, the most variable, when there is one)."""
    estimates = {m: e for m, e in estimates.items() if m != HEADLINE}
    guesses = [e.value for e in estimates.values()]
    guess = min(guesses, key=lambda v: abs(v - 0.5)) if guesses else None
    return LabelFreeAccuracy(False, None, estimates, reason, domain_auc, effective_rows,
                             labels_needed(len(window), guess))


def _blend(first: Estimate, second: Estimate) -> Estimate:
    """The mean of two estimates; its interval is the mean of their half-widths plus half
    their gap on each side, so it holds both centres."""
    value = (first.value + second.value) / 2
    half = ((first.high - first.low) + (second.high - second.low)) / 4 + \
        abs(first.value - second.value) / 2
    return Estimate(HEADLINE, value, float(np.clip(value - half, 0, 1)),
                    float(np.clip(value + half, 0, 1)))
