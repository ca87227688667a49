"""How a fitted view classifies a batch of items: every asked method through its registry entry
(core/methods.py), then the primary method's margin, calibrated confidence and top-k.

Above the fitted data (core/model.py) and the registry; called per batch by every classify road
(spark/transform.py's UDF, spark/arrow_scan.py) and by scripts/study.py.
"""

from __future__ import annotations

import numpy as np

from pairspark.core.batches import chunk_rows
from pairspark.core.calibration import answer_scores, probabilities, top_k
from pairspark.core.cosine import base_assign, top_candidates, unit_rows64
from pairspark.core.methods import REGISTRY, Batch
from pairspark.core.model import ViewModel
from pairspark.core.targets import top_margin
from pairspark.core.tournament import resolve_candidates


def classify(view: ViewModel, x: np.ndarray, item_keys: np.ndarray, methods: tuple[str, ...],
             candidates: int | str = 0, margin_of: str | None = None, k: int = 3,
             backoff_at: float = 0.9) -> dict[str, np.ndarray]:
    """Class indices per method for a batch x (n, D) of raw vectors, plus `base_cosine`,
    `margin`: how sure `margin_of` (default: the last method) is of its answer, its own top-2
    score margin, or the base cosine margin for the methods that only name a winner
    (pairwise, roundrobin); only comparable within a method; and from `margin_of`'s
    calibrated probabilities (base's for a method that only names a winner): `confidence`,
    the probability of its answer, and `top` / `top_p`, its k most probable classes.

    candidates > 0: the pairwise bracket (and the round robin) holds only each item's top
    `candidates` base classes; "auto": core/tournament.resolve_candidates.

    With a class tree (view.tree), also from `margin_of`'s probabilities: `path_confidence`
    (n, levels), the probability that the answer's path is right down to each level (NaN below
    the leaf), and `backoff`, the deepest node of the path at least `backoff_at` likely (node
    index, -1 for none); core/tree.py.

    float64 on purpose: BLAS float32 results for one row change in the last bits with the
    batch it is computed in (measured: thousands of differing entries), so answers and cosines
    would depend on partitioning. In float64 those differences (~1e-16) vanish when the cosine
    is rounded to float32 and can only flip an exact tie.

    The view must be prepared for `methods` (core/methods.prepare), as the driver does once.
    Rows go through in chunks of at most core/batches.CHUNK_CELLS rows x classes (a worker
    at 10,000 classes peaked at 7.2 GB before them).
    """
    rows = chunk_rows(view.n_classes)
    if len(x) <= rows:
        return _classify_rows(view, x, item_keys, methods, candidates, margin_of, k, backoff_at)
    parts = [_classify_rows(view, x[start : start + rows], item_keys[start : start + rows], methods, candidates,
                            margin_of, k, backoff_at) for start in range(0, len(x), rows)]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _classify_rows(view: ViewModel, x: np.ndarray, item_keys: np.ndarray, methods: tuple[str, ...],
                   candidates: int | str, margin_of: str | None, k: int, backoff_at: float) -> dict[str, np.ndarray]:
    x_unit = unit_rows64(x)
    base = base_assign(x_unit, view.vectors64)
    bracket = resolve_candidates(candidates, view.n_classes)
    top = top_candidates(base.cosines, bracket) if 0 < bracket < view.n_classes else None
    batch = Batch(x_unit, base, item_keys, top)
    out: dict[str, np.ndarray] = {"base_cosine": base.best_cosine.astype(np.float32), "margin": base.margin}
    margin_of = margin_of or methods[-1]
    for method in methods:
        labels, scores = REGISTRY[method].predict(view, batch)
        out[method] = labels
        if method == margin_of:
            if scores is not None and method != "base":
                out["margin"] = top_margin(scores)
            # a method not calibrated at fit (ovr, gnb asked only at classify; a model from
            # before the method was calibrated) carries base's probabilities, its answer first
            own = method == "base" or method in view.calibration
            probs = probabilities(answer_scores(labels, scores if own else None, base.cosines),
                                  view.calibration.get(method if own else "base", 1.0))
            out["confidence"] = probs[np.arange(len(labels)), labels] if len(labels) else np.zeros(0)
            out["top"], out["top_p"] = top_k(probs, k, first=labels)
            if view.tree is not None:
                # as published (float32), so that the back-off is what a reader of the column finds
                path_confidence = view.tree.path_confidence(probs, labels).astype(np.float32).astype(np.float64)
                out["path_confidence"] = path_confidence
                out["backoff"] = view.tree.backoff(labels, path_confidence, backoff_at)
    return out
