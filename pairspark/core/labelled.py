"""Verified labels start the rounds (docs/METHOD.md, "Verified labels"): round 1's scores of a view
as the zero-shot evidence and the labels' own discriminant multiplied, each tempered on the labels.
Used by core/rounds.train_until_repeat.
"""

from __future__ import annotations

import numpy as np

from pairspark.core.held_out import CALIBRATION_FOLDS, calibration_folds
from pairspark.core.scorers import DISABLED, LabelStats, lda_scorer, log_softmax


def smoothed_temperature(scores: np.ndarray, labels: np.ndarray, smoothing: float) -> float:
    """The T minimising the cross-entropy of softmax(scores / T) against each row's label smoothed by
    `smoothing` (1 - smoothing on the label, the rest spread evenly over the other columns), by golden
    section over log T in [1e-4, 1e4] as core/calibration.fit_temperature. Unlike the plain
    likelihood, it has a finite minimum when the scores rank every label first (T would run to 0 and
    any source that is right on a few labels would outweigh every other)."""
    n, c = scores.shape
    finite = np.isfinite(scores)  # a class a source cannot score takes no share of the smoothing
    target = np.where(finite, smoothing / np.maximum(finite.sum(axis=1, keepdims=True) - 1, 1), 0.0)
    target[np.arange(n), labels] = 1.0 - smoothing
    target /= target.sum(axis=1, keepdims=True)

    def loss(log_t: float) -> float:
        logp = log_softmax(np.where(finite, scores, -np.inf) / np.exp(log_t))
        return float(-(target * np.where(target > 0, logp, 0.0)).sum() / n)

    lo, hi = np.log(1e-4), np.log(1e4)
    ratio = (np.sqrt(5.0) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(80):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return float(np.exp((lo + hi) / 2))


def labelled_start(x: np.ndarray, cosines: np.ndarray, verified: np.ndarray) -> np.ndarray | None:
    """(n, C) round-1 scores of one view given verified labels (docs/METHOD.md, "Verified labels"):
    the zero-shot evidence and the labels' own discriminant multiplied as two experts, each tempered
    on the verified rows (smoothed_temperature over the labelled classes, the labels smoothed by the
    rule of succession: a source right on all k of a class's k labels is right on the next with
    probability (k + 1) / (k + 2), k the mean number of labels per labelled class),

        log_softmax(cos / T_zs) + log_softmax(lda / T_lab),

    lda = lda_scorer on the verified rows alone (shrinkage min(1, D / n), as every discriminant here),
    T_lab fitted on its scores cross-fitted over CALIBRATION_FOLDS folds of the verified rows (in-sample
    scores would always be right). So each source weighs what it is worth on the labels: prompts that
    disagree with the labels get a large T_zs (flat), a discriminant on few or unseparable labels a
    large T_lab; more labels per class make the discriminant surer and heavier. A class with no
    verified row gets the labels' uniform log-probability (they say nothing about it): it keeps its
    zero-shot evidence. None with fewer than two labelled classes (no discriminant to fit)."""
    n_classes = cosines.shape[1]
    rows = np.flatnonzero(verified >= 0)
    labelled = np.bincount(verified[rows], minlength=n_classes) > 0
    if labelled.sum() < 2:
        return None
    x_rows, y = x[rows], verified[rows]
    stats = LabelStats.from_labels(x_rows, y, n_classes, with_scatter=True)
    held = np.full((len(rows), n_classes), DISABLED)
    folds = calibration_folds(len(rows))
    for k in range(CALIBRATION_FOLDS):
        fold = folds == k
        if not fold.any():
            continue
        rest = stats - LabelStats.from_labels(x_rows[fold], y[fold], n_classes, with_scatter=True)
        if (rest.weight > 0).sum() >= 2:
            held[fold] = lda_scorer(rest).scores(x_rows[fold], cosines[rows][fold])
    smoothing = 1.0 / (len(rows) / labelled.sum() + 2.0)
    cols = np.flatnonzero(labelled)
    y_cols = np.searchsorted(cols, y)
    usable = np.isfinite(held[np.arange(len(rows)), y])  # a row whose class left with its fold: no score for it
    t_zs = smoothed_temperature(cosines[rows][:, cols], y_cols, smoothing)
    t_lab = smoothed_temperature(held[usable][:, cols], y_cols[usable], smoothing) if usable.any() else 1.0
    evidence = np.full((len(x), n_classes), -np.log(labelled.sum()))
    evidence[:, labelled] = log_softmax(lda_scorer(stats).scores(x, cosines)[:, labelled] / t_lab)
    return log_softmax(cosines / t_zs) + evidence
