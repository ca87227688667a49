"""Who teaches whom: the confident-margin rule and the training targets of the co-training rounds.

A view is confident on an item when the margin between its two best scores is outside its lowest
`share` of margins (the min_margin setting). The rounds (core/rounds.py) train each view on the
targets `cotrain_targets` picks; calibration (core/confidence.py) judges each view by the other
with `second_opinion_targets`. Pure numpy.
"""

from __future__ import annotations

import numpy as np


def top_margin(scores: np.ndarray) -> np.ndarray:
    """Best minus second-best score per row (+inf when only one class can win)."""
    if scores.shape[1] < 2:
        return np.full(len(scores), np.inf)
    top2 = np.partition(scores, scores.shape[1] - 2, axis=1)[:, -2:]
    with np.errstate(invalid="ignore"):
        margin = top2[:, 1] - top2[:, 0]
    return np.where(np.isfinite(top2[:, 0]), margin, np.inf)


def margin_threshold(margins: np.ndarray, share: float) -> float:
    """The `share` quantile of the finite margins (an infinite margin is always confident)."""
    finite = margins[np.isfinite(margins)]
    return float(np.quantile(finite, share)) if finite.size else 0.0


def cotrain_targets(labels: list[np.ndarray], margins: list[np.ndarray], thresholds: list[float]):
    """Per view (training label, keep mask) for one co-training round of two views.

    Agreed items keep their shared label; elsewhere a view keeps its own answer where it is
    confident (margin >= its threshold), is taught the other view's answer where only the other is
    confident, and gets nothing where neither is. A view's own confident answer comes first: a
    class one view cannot see (its prompt is poor there) must not overwrite the other view's
    confident answers for it (docs/METHOD.md, "Small catalogs")."""
    agree = labels[0] == labels[1]
    out = []
    for v in (0, 1):
        other = 1 - v
        confident_self = margins[v] >= thresholds[v]
        confident_other = margins[other] >= thresholds[other]
        out.append((np.where(agree | confident_self, labels[v], labels[other]), agree | confident_self | confident_other))
    return out


def second_opinion_targets(labels: list[np.ndarray], margins: list[np.ndarray], thresholds: list[float]):
    """Per view (label, keep) for calibration: each view judged by the other. Agreed items keep
    their shared label; elsewhere a view gets the other view's answer where the other is confident,
    and nothing where it is not. Unlike cotrain_targets, a view's own confident answer is no target
    here: a temperature fitted on a view's own answers would only learn to trust them."""
    agree = labels[0] == labels[1]
    out = []
    for v in (0, 1):
        other = 1 - v
        out.append((np.where(agree, labels[v], labels[other]), agree | (margins[other] >= thresholds[other])))
    return out
