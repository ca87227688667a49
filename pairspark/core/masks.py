"""Per-pair dimension masks from the cross ratio (METHOD.md step 5)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pairspark.core.crossvar import cross_ratio
from pairspark.core.stats import ClassMoments


@dataclass(frozen=True)
class MaskSettings:
    ratio_threshold: float = 1.2
    min_dims: int = 8
    max_dims: int | None = None
    # A class with fewer confident items than this has no usable variance: its pairs keep all
    # dimensions, so the match falls back to a plain cosine comparison of the two classes.
    min_class_count: int = 2


def select_dims(ratio: np.ndarray, settings: MaskSettings) -> np.ndarray:
    """Sorted 0-based dims with ratio >= threshold, topped up to min_dims, capped at max_dims.

    Ranking is by ratio descending, ties by lower dimension index, so the choice is deterministic.
    """
    ratio = np.asarray(ratio, dtype=np.float64)
    if np.isnan(ratio).any():
        raise ValueError("ratio holds NaN; refusing to build a mask from it")
    dim = ratio.shape[0]
    ranked = np.lexsort((np.arange(dim), -ratio))  # last key is primary
    n_keep = int(np.count_nonzero(ratio >= settings.ratio_threshold))
    n_keep = max(n_keep, min(settings.min_dims, dim))
    if settings.max_dims is not None:
        n_keep = min(n_keep, settings.max_dims)
    n_keep = max(n_keep, 1)
    return np.sort(ranked[:n_keep]).astype(np.int32)


def class_pairs(n_classes: int) -> np.ndarray:
    """All unordered pairs (a, b) with a < b, in row-major order: shape (P, 2)."""
    a, b = np.triu_indices(n_classes, k=1)
    return np.stack([a, b], axis=1).astype(np.int32)


def pair_masks(moments: ClassMoments, settings: MaskSettings) -> list[np.ndarray]:
    """One sorted dims array per pair of class_pairs(C)."""
    variance = moments.variance
    usable = moments.count >= settings.min_class_count
    all_dims = np.arange(moments.dim, dtype=np.int32)
    masks = []
    for a, b in class_pairs(moments.n_classes):
        if not (usable[a] and usable[b]):
            masks.append(all_dims)
            continue
        ratio = cross_ratio(moments.mean[a], variance[a], moments.mean[b], variance[b])
        masks.append(select_dims(ratio, settings))
    return masks
