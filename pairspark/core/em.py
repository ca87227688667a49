"""The fit loops that re-estimate from full passes over every item: centroid (prototypes from the
items each class wins), transductive (TransCLIP-style Gaussian EM) and labelshift (class priors by
label-shift EM). Written against core/fitting.Passes; registered in core/methods.py.
"""

from __future__ import annotations

import logging

import numpy as np

from pairspark.core.fitting import VERIFIED_WEIGHT, Fit, FitContext, Passes, sample_cosines, training_stats
from pairspark.core.scorers import (
    LABELSHIFT_TEMPERATURE,
    LabelStats,
    Scorer,
    centroid_scorer,
    label_shift_priors,
    label_shift_scorer,
    softmax,
    transductive_initial,
    transductive_scorer,
)

log = logging.getLogger("pairspark")

CENTROID_ITERATIONS = 3
TRANSDUCTIVE_ITERATIONS = 10


def fit_centroid(passes: Passes, ctx: FitContext) -> Fit:
    """Iteration 1 from the confident base subset's means, then re-assign every item by cosine to
    the new centroids and re-average, CENTROID_ITERATIONS in all."""
    scorers = {n: centroid_scorer(LabelStats(ctx.moments[n].count.astype(float), ctx.moments[n].sums,
                                             np.zeros_like(ctx.moments[n].sums), np.zeros((0, 0))), ctx.class_vectors[n])
               for n in ctx.views}
    for _ in range(CENTROID_ITERATIONS - 1):
        current = dict(scorers)

        def labeller(xs, cosines, verified, current=current):
            return {n: training_stats(x, current[n].predict(x, cosines[n]), None, verified, len(current[n].bias))
                    for n, x in xs.items()}

        stats = passes.stats(labeller)
        scorers = {n: centroid_scorer(stats[n], ctx.class_vectors[n]) for n in ctx.views}
    return Fit(scorers, {"passes": CENTROID_ITERATIONS - 1})


def fit_transductive(passes: Passes, ctx: FitContext) -> Fit:
    """EM: z from the text prior, then TRANSDUCTIVE_ITERATIONS (M-step, E-step) rounds."""
    current: dict[str, Scorer] | None = None
    for _ in range(TRANSDUCTIVE_ITERATIONS):

        def labeller(xs, cosines, verified, current=current):
            out = {}
            for n, x in xs.items():
                z = transductive_initial(cosines[n]) if current is None else softmax(current[n].scores(x, cosines[n]))
                rows = np.flatnonzero(verified >= 0)
                if len(rows):  # a verified row: all its weight on its class
                    z = z.copy()
                    z[rows] = 0.0
                    z[rows, verified[rows]] = VERIFIED_WEIGHT
                out[n] = LabelStats.from_weights(x, z)
            return out

        stats = passes.stats(labeller)
        current = {n: transductive_scorer(stats[n]) for n in ctx.views}
    return Fit(current, {"passes": TRANSDUCTIVE_ITERATIONS})


def fit_labelshift(passes: Passes, ctx: FitContext) -> Fit:
    """Class priors by EM on the driver's sample (core/scorers.label_shift_priors: base's
    probabilities at LABELSHIFT_TEMPERATURE, a verified row counting as its class). When the
    sample is not every item, one pass over all items then takes the mean of every item's
    posteriors under the sample's priors: one EM step on all items from the sample's fixed point."""
    names = list(ctx.views)
    sample, verified = passes.sample()
    cosines = sample_cosines(names, sample, ctx)
    priors, facts = {}, {"passes": 0, "sample_items": int(len(sample[names[0]])), "iterations": {}, "converged": True}

    def known(rows_verified: np.ndarray, n_classes: int) -> np.ndarray:
        fixed = np.zeros((len(rows_verified), n_classes))
        rows = np.flatnonzero(rows_verified >= 0)
        fixed[rows, rows_verified[rows]] = 1.0
        return fixed

    for n in names:
        probs = softmax(LABELSHIFT_TEMPERATURE * cosines[n])
        priors[n], iterations, converged = label_shift_priors(probs, known(verified, probs.shape[1]))
        facts["iterations"][n] = iterations
        facts["converged"] = facts["converged"] and converged
    if len(sample[names[0]]) < ctx.valid_items:

        def labeller(xs, cos, rows_verified):
            out = {}
            for n in names:
                fixed = known(rows_verified, cos[n].shape[1])
                z = softmax(LABELSHIFT_TEMPERATURE * cos[n]) * priors[n]
                z = z / np.maximum(z.sum(axis=1, keepdims=True), 1e-300)
                z[fixed.sum(axis=1) > 0] = fixed[fixed.sum(axis=1) > 0]
                out[n] = LabelStats(z.sum(axis=0), np.zeros((z.shape[1], xs[n].shape[1])),
                                    np.zeros((z.shape[1], xs[n].shape[1])), np.zeros((0, 0)))
            return out

        stats = passes.stats(labeller)
        priors = {n: stats[n].weight / max(stats[n].weight.sum(), 1e-300) for n in names}
        facts["passes"] = 1
    log.info("labelshift: priors %s", {n: np.round(p, 3).tolist() for n, p in priors.items()})
    return Fit({n: label_shift_scorer(priors[n], sample[n].shape[1]) for n in names}, facts)
