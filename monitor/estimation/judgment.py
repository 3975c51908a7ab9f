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
  than ``max_disagreement`` apart, so at least one of them is far off.

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


def cover_reasons(domain_auc: float, effective_rows: float, combined: float | None,
                  reweighted: float, policy: EstimationPolicy) -> list[str]:
    """Why no label-free number can be trusted for a window (empty: one can)."""
    reasons = []
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
    """Labels drawn uniformly from a window of ``window_rows`` that bound its accuracy
    within ``half_width`` at 95 % (normal approximation with the finite-population
    correction), for an accuracy near ``accuracy_guess`` (0.5, the worst case, without
    one)."""
    p = 0.5 if accuracy_guess is None else min(max(accuracy_guess, 0.05), 0.95)
    n0 = Z95 ** 2 * p * (1 - p) / half_width ** 2
    return int(min(window_rows, math.ceil(n0 / (1 + (n0 - 1) / max(window_rows, 1)))))


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
                            None if combined is None else combined.value, value, policy)
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
