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


# Pairs are processed in blocks so the (block, D) ratio matrix stays small even at 1,000 classes.
_PAIR_BLOCK = 4096


@dataclass(frozen=True)
class PairMasks:
    """All pairs' dims, packed (CSR): pair p keeps dims[indptr[p]:indptr[p + 1]], sorted.

    2 bytes per kept dimension: 1,000 classes x ~100 dims per pair is ~100 MB, where a dense
    (pairs x D) float64 weight matrix would be 3 GB.
    """

    indptr: np.ndarray  # (P + 1,) int64
    dims: np.ndarray  # (nnz,) uint16 (D <= 65,535)

    @staticmethod
    def from_keep(keep_blocks) -> PairMasks:
        """From (B, D) bool blocks of consecutive pairs (any iterable; each block is packed at once)."""
        lengths, dims = [], []
        for block in keep_blocks:
            lengths.append(block.sum(axis=1))
            dims.append(np.nonzero(block)[1].astype(np.uint16))  # row-major: sorted within a row
        indptr = np.concatenate([[0], np.cumsum(np.concatenate(lengths) if lengths else [])]).astype(np.int64)
        return PairMasks(indptr, np.concatenate(dims) if dims else np.zeros(0, np.uint16))

    @staticmethod
    def from_lists(dims: list) -> PairMasks:
        lengths = np.array([len(d) for d in dims], dtype=np.int64)
        flat = np.concatenate([np.asarray(d, dtype=np.int64) for d in dims]) if len(dims) else np.zeros(0, np.int64)
        if flat.size and (flat.min() < 0 or flat.max() > np.iinfo(np.uint16).max):
            raise ValueError("mask dims must lie in [0, 65535]")
        return PairMasks(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), flat.astype(np.uint16))

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def __getitem__(self, p: int) -> np.ndarray:
        return self.dims[self.indptr[p] : self.indptr[p + 1]].astype(np.int32)

    def __iter__(self):
        return (self[p] for p in range(len(self)))

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    @property
    def nbytes(self) -> int:
        return int(self.indptr.nbytes + self.dims.nbytes)


def select_dims_block(ratio: np.ndarray, settings: MaskSettings) -> np.ndarray:
    """select_dims for a block of pairs at once: (B, D) ratios -> (B, D) bool keep."""
    ratio = np.asarray(ratio, dtype=np.float64)
    if np.isnan(ratio).any():
        raise ValueError("ratio holds NaN; refusing to build a mask from it")
    n, dim = ratio.shape
    n_keep = np.count_nonzero(ratio >= settings.ratio_threshold, axis=1)
    n_keep = np.maximum(n_keep, min(settings.min_dims, dim))
    if settings.max_dims is not None:
        n_keep = np.minimum(n_keep, settings.max_dims)
    n_keep = np.maximum(n_keep, 1)
    ranked = np.argsort(-ratio, axis=1, kind="stable")  # stable: ties go to the lower dim
    keep = np.zeros((n, dim), dtype=bool)
    rows = np.arange(n)[:, None]
    keep[rows, ranked] = np.arange(dim)[None, :] < n_keep[:, None]
    return keep


def pair_masks(moments: ClassMoments, settings: MaskSettings) -> PairMasks:
    """The masks of every pair of class_pairs(C), in that order."""
    variance = moments.variance
    usable = moments.count >= settings.min_class_count
    pairs = class_pairs(moments.n_classes)

    def blocks():
        for start in range(0, len(pairs), _PAIR_BLOCK):
            a, b = pairs[start : start + _PAIR_BLOCK, 0], pairs[start : start + _PAIR_BLOCK, 1]
            ratio = cross_ratio(moments.mean[a], variance[a], moments.mean[b], variance[b])
            keep = select_dims_block(ratio, settings)
            keep[~(usable[a] & usable[b])] = True
            yield keep

    return PairMasks.from_keep(blocks())
