"""Per-pair dimension masks from the cross ratio (METHOD.md step 5)."""

from __future__ import annotations

from dataclasses import dataclass, replace

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


# Above this size the CSR form gives way to one bit per (pair, dim) when that is smaller.
CSR_LIMIT_BYTES = 64 * 2**20


@dataclass(frozen=True)
class PairMasks:
    """All pairs' dims, packed, in one of two forms (the kernel reads either):

    * CSR: pair p keeps dims[indptr[p]:indptr[p + 1]], sorted; 2 bytes per kept dim, and a match
      reads only its dims. Used while it stays under CSR_LIMIT_BYTES.
    * bits: (P, ceil(D/64)) uint64, dim d is bit d % 64 of word d // 64; D/8 bytes per pair
      whatever the mask size: 1,000 classes x 768 dims is 46 MB, where CSR with ~230 dims per
      pair is 226 MB (and a dense float64 (pairs x D) weight matrix 3 GB).
    """

    indptr: np.ndarray | None  # (P + 1,) int64, CSR form
    dims: np.ndarray | None  # (nnz,) uint16 (D <= 65,535), CSR form
    bits: np.ndarray | None = None  # (P, W) uint64, bit form
    dim: int = 0  # D, needed by the bit form

    @staticmethod
    def from_keep(keep_blocks) -> PairMasks:
        """From (B, D) bool blocks of consecutive pairs (any iterable; each block is packed at once)."""
        lengths, dims = [], []
        for block in keep_blocks:
            lengths.append(block.sum(axis=1))
            dims.append(np.nonzero(block)[1].astype(np.uint16))  # row-major: sorted within a row
        indptr = np.concatenate([[0], np.cumsum(np.concatenate(lengths) if lengths else [])]).astype(np.int64)
        return PairMasks(indptr, np.concatenate(dims) if dims else np.zeros(0, np.uint16))

    @property
    def is_bits(self) -> bool:
        return self.bits is not None

    def __len__(self) -> int:
        return len(self.bits) if self.is_bits else len(self.indptr) - 1

    def keep(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, D) bool rows of the pairs start..stop-1 (D from the masks or `dim`)."""
        if self.is_bits:
            as_bytes = np.ascontiguousarray(self.bits[start:stop], dtype="<u8").view(np.uint8)
            return np.unpackbits(as_bytes, axis=1, bitorder="little")[:, : self.dim].astype(bool)
        lengths = np.diff(self.indptr[start : stop + 1])
        out = np.zeros((stop - start, self.dim), dtype=bool)
        out[np.repeat(np.arange(stop - start), lengths), self.dims[self.indptr[start] : self.indptr[stop]]] = True
        return out

    def __getitem__(self, p: int) -> np.ndarray:
        if self.is_bits:
            return np.flatnonzero(self.keep(p, p + 1)[0]).astype(np.int32)
        return self.dims[self.indptr[p] : self.indptr[p + 1]].astype(np.int32)

    def __iter__(self):
        return (self[p] for p in range(len(self)))

    @property
    def lengths(self) -> np.ndarray:
        if self.is_bits:
            return np.bitwise_count(self.bits).sum(axis=1).astype(np.int64)
        return np.diff(self.indptr)

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes if self.is_bits else self.indptr.nbytes + self.dims.nbytes)

    def csr(self) -> tuple[np.ndarray, np.ndarray]:
        """(indptr, dims) whatever the form (for files)."""
        if not self.is_bits:
            return self.indptr, self.dims
        lengths, dims = [], []
        for start in range(0, len(self), _PAIR_BLOCK):
            block = self.keep(start, min(len(self), start + _PAIR_BLOCK))
            lengths.append(block.sum(axis=1))
            dims.append(np.nonzero(block)[1].astype(np.uint16))
        return np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64), np.concatenate(dims)

    def compact(self, dim: int, limit: int | None = None) -> PairMasks:
        """The same masks in the form to broadcast: CSR under `limit` (default CSR_LIMIT_BYTES),
        else the smaller of the two."""
        limit = CSR_LIMIT_BYTES if limit is None else limit
        if self.is_bits:
            return self
        words = (dim + 63) // 64
        if self.nbytes <= limit or len(self) * words * 8 >= self.nbytes:
            return replace(self, dim=dim)
        bits = np.zeros((len(self), words), dtype=np.uint64)
        csr = replace(self, dim=dim)
        for start in range(0, len(self), _PAIR_BLOCK):
            stop = min(len(self), start + _PAIR_BLOCK)
            packed = np.packbits(csr.keep(start, stop), axis=1, bitorder="little")
            padded = np.zeros((stop - start, words * 8), dtype=np.uint8)
            padded[:, : packed.shape[1]] = packed
            bits[start:stop] = padded.view("<u8")
        return PairMasks(None, None, bits, dim)


def select_dims_block(ratio: np.ndarray, settings: MaskSettings) -> np.ndarray:
    """select_dims for a block of pairs at once: (B, D) ratios -> (B, D) bool keep."""
    ratio = np.asarray(ratio, dtype=np.float64)
    if np.isnan(ratio).any():
        raise ValueError("ratio holds NaN; refusing to build a mask from it")
    n, dim = ratio.shape
    keep = ratio >= settings.ratio_threshold
    n_above = keep.sum(axis=1)
    n_keep = np.maximum(n_above, min(settings.min_dims, dim))
    if settings.max_dims is not None:
        n_keep = np.minimum(n_keep, settings.max_dims)
    n_keep = np.maximum(n_keep, 1)
    # Only rows topped up or capped need a ranking (a sort of D per pair: 40 s at 1,000 classes).
    rerank = np.flatnonzero(n_keep != n_above)
    if rerank.size:
        ranked = np.argsort(-ratio[rerank], axis=1, kind="stable")  # stable: ties go to the lower dim
        chosen = np.zeros((rerank.size, dim), dtype=bool)
        chosen[np.arange(rerank.size)[:, None], ranked] = np.arange(dim)[None, :] < n_keep[rerank][:, None]
        keep[rerank] = chosen
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

    return PairMasks.from_keep(blocks()).compact(moments.dim)
