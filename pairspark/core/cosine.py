"""Unit normalisation and base cosine assignment (METHOD.md steps 1 and 2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def unit_rows64(x: np.ndarray) -> np.ndarray:
    """Unit rows in float64 (fit and classify both use this, so they agree on every item).

    One float64 copy, normalised in place: numpy's norm would allocate two more (n, D) arrays."""
    out = np.array(x, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", out, out))
    out /= np.where(norms > 0, norms, 1.0)[:, None]
    return out


def ensemble_prompts(codes: np.ndarray, unit_rows: np.ndarray, n_classes: int) -> np.ndarray:
    """Per class the unit mean of its unit prompt rows (codes: each row's class index), CLIP-style
    prompt ensembling; a class with one row keeps that row exactly. Zero where a class's prompts
    cancel out or it has none (the caller refuses it)."""
    sums = np.zeros((n_classes, unit_rows.shape[1]))
    np.add.at(sums, codes, unit_rows)
    counts = np.bincount(codes, minlength=n_classes)
    norms = np.where(counts == 1, 1.0, np.linalg.norm(sums, axis=1))[:, None]
    return np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 1e-9)


@dataclass(frozen=True)
class BaseAssignment:
    best: np.ndarray  # (n,) int class index, argmax cosine (first index on ties)
    best_cosine: np.ndarray  # (n,)
    margin: np.ndarray  # (n,) best minus second-best cosine, >= 0
    cosines: np.ndarray  # (n, C) every item-class cosine


def top_candidates(cosines: np.ndarray, k: int) -> np.ndarray:
    """(n, k) int64: each row's k highest-cosine classes, in ascending class order.

    A partial partition, not a sort (a full argsort of 1,000 classes costs more than the
    tournament it shortens). An exact tie at the k-th place is settled by the partition: the
    same row always gives the same set, since a row's cosines never depend on its batch."""
    n, n_classes = cosines.shape
    if k >= n_classes:
        return np.broadcast_to(np.arange(n_classes, dtype=np.int64), (n, n_classes)).copy()
    best = np.argpartition(cosines, n_classes - k, axis=1)[:, n_classes - k :]
    return np.sort(best, axis=1).astype(np.int64)


def base_assign(x_unit: np.ndarray, class_unit: np.ndarray) -> BaseAssignment:
    """Cosine argmax of unit rows x against unit class vectors, with the top-2 margin."""
    cos = x_unit @ class_unit.T
    best = np.argmax(cos, axis=1)
    rows = np.arange(cos.shape[0])
    best_cos = cos[rows, best]
    if cos.shape[1] > 1:
        second = np.partition(cos, cos.shape[1] - 2, axis=1)[:, -2]
    else:
        second = np.full_like(best_cos, -np.inf)
    return BaseAssignment(best, best_cos, best_cos - second, cos)


def confident(assign: BaseAssignment, min_cosine: float, min_margin: float) -> np.ndarray:
    """Mask of items whose base answer may feed the class statistics (METHOD.md step 2)."""
    return (assign.best_cosine >= min_cosine) & (assign.margin >= min_margin)


MARGIN_BINS = 4096  # margins lie in [0, 2]: resolution ~5e-4 for the quantile form of min_margin


def margin_histogram(margin: np.ndarray) -> np.ndarray:
    """Counts of margins in MARGIN_BINS fixed bins over [0, 2]; sums merge exactly across partitions."""
    idx = np.clip((np.asarray(margin, np.float64) * (MARGIN_BINS / 2.0)).astype(np.int64), 0, MARGIN_BINS - 1)
    return np.bincount(idx, minlength=MARGIN_BINS).astype(np.int64)


def margin_quantile(histogram: np.ndarray, q: float) -> float:
    """Lower edge of the bin holding quantile q: items strictly below it are the dropped share.

    Uses the bin's lower edge so that `margin >= threshold` keeps at least the (1 - q) share.
    """
    total = int(histogram.sum())
    if total == 0 or q <= 0:
        return 0.0
    cumulative = np.cumsum(histogram)
    bin_index = int(np.searchsorted(cumulative, q * total, side="left"))
    return bin_index * (2.0 / MARGIN_BINS)
