"""Held-out scores for calibration: the driver's sample dealt into folds, and every row of it scored
by a discriminant fitted without its fold (docs/METHOD.md, "Confidence"). core/confidence.py
calibrates on these; core/labelled.py cross-fits the verified labels' discriminant on the same folds.
"""

from __future__ import annotations

import numpy as np

from pairspark.core.fitting import mean_stats, training_stats
from pairspark.core.scorers import lda_scorer
from pairspark.errors import UsageError


# The driver's sample is split into this many folds to score each row by a discriminant fitted
# without its fold (held_out_scores): confidence is calibrated on answers the learner did not
# train on (docs/METHOD.md, "Confidence").
CALIBRATION_FOLDS = 10
CALIBRATION_FOLD_SEED = 0


def calibration_folds(rows: int) -> np.ndarray:
    """(rows,) fold index of each sample row: a seeded permutation dealt round robin (folds differ
    in size by at most one row)."""
    folds = np.empty(rows, np.int64)
    folds[np.random.default_rng(CALIBRATION_FOLD_SEED).permutation(rows)] = np.arange(rows) % CALIBRATION_FOLDS
    return folds


def held_out_scores(names: list[str], xs: dict[str, np.ndarray], cosines: dict[str, np.ndarray], verified: np.ndarray,
                    cycle_stats, cycle_targets) -> dict[str, np.ndarray]:
    """Per view, every row's discriminant scores from a discriminant fitted on the same statistics
    less its own fold's rows (their training labels in each round of the cycle, verified rows at
    their weight): K-fold cross-fitting of the final fit, with the training targets held fixed.
    A discriminant scores the rows it trained on as if it had always been right about them (it
    reproduces its own pseudo-labels, and a verified label it was given); a temperature fitted on
    those scores runs to 0. Cheap: one scatter of the sample in all and K solves per view."""
    rows = len(verified)
    folds = calibration_folds(rows)
    out = {}
    for v, name in enumerate(names):
        scores = np.empty((rows, cosines[name].shape[1]))
        for k in range(CALIBRATION_FOLDS):
            fold = np.flatnonzero(folds == k)
            if not len(fold):
                continue
            parts = []
            for stats, targets in zip(cycle_stats, cycle_targets):
                label, keep = targets[v]
                own = training_stats(xs[name][fold], label[fold], keep[fold], verified[fold], len(stats[name].weight),
                                     with_scatter=True)
                parts.append(stats[name] - own)
            rest = mean_stats(parts)
            if rest.weight.sum() <= 0:  # nothing trained outside this fold: no held-out model
                raise UsageError("calibration: every training item of a view is in one fold")
            scores[fold] = lda_scorer(rest).scores(xs[name][fold], cosines[name][fold])
        out[name] = scores
    return out
