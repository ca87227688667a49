"""Pair masks made where they are needed (METHOD.md step 5, on demand), kept per Python worker.

Above STORED_PAIRS_MAX pairs (core/model.py) a model stores no pair masks: C(C-1)/2 of them is
50 million pairs per view at 10,000 classes, where an item meets only the 15 pairs of its
bracket. A pair's mask is a function of the two classes' statistics and the mask settings alone
(core/masks.py), and its match weights of the two prompt vectors and that mask, so they are
made here, for the pairs that items actually meet, by the very expressions the stored builder
uses: the same bits (tests/test_pair_cache.py compares them with core/masks.pair_masks and
core/tournament.pair_coefficients / pair_weights).

A PairCache keeps the pairs it has built, CSR dims and float64 weights side by side, up to
CACHE_BYTES; past that it starts over (a batch's pairs are always all present while it plays).
One cache per model per Python worker (worker_cache): tasks that a worker runs one after another
reuse the pairs earlier batches built.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from pairspark.core import kernels
from pairspark.core.masks import MaskSettings, select_dims_block
from pairspark.core.stats import ClassMoments
from pairspark.core.tree import Tree, node_moments, sibling_ancestors

# Pairs are built in blocks so the (block, D) ratio matrices stay small (4,096 x 768 float64: 25 MB).
_BUILD_BLOCK = 4096
# What one cache may hold (dims + weights: ~10 bytes per kept dim, ~2.3 KB per pair at 768 dims).
# Small on purpose: at 10,000 classes items share few pairs (100k items met 14 new pairs each of
# their 15 with a 256 MB cache, 15 with 64 MB), so a large cache mostly costs memory: a Python
# worker held ~0.5 GB per view in it (measured with scripts/bench's catalog, docs/PERFORMANCE.md).
# A batch's pairs are held while it plays even beyond this (classify's row chunks keep them few).
CACHE_BYTES = 64 * 2**20


def build_pairs(vectors64: np.ndarray, mean: np.ndarray, variance: np.ndarray, usable: np.ndarray,
                settings: MaskSettings, a: np.ndarray, b: np.ndarray, squares: np.ndarray | None = None,
                stat_a: np.ndarray | None = None, stat_b: np.ndarray | None = None):
    """Masks and match weights of the pairs (a[i], b[i]), a < b: (lengths (B,), dims (nnz,) uint16,
    weights (nnz,) float64, coefficients (B, 2)), each pair's dims ascending. The expressions of
    masks.pair_masks, tournament.pair_coefficients and kernels.pair_weights, row for row.
    `squares`: vectors64 ** 2 when the caller keeps it (else each block's rows are squared: the
    same bits, without a C x D array per cache). `stat_a` / `stat_b`: the
    rows of mean, variance and usable that make each pair's mask (default a, b; a class tree
    masks a pair of leaves by the siblings that hold them: TreePairCache)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    stat_a = a if stat_a is None else np.asarray(stat_a, np.int64)
    stat_b = b if stat_b is None else np.asarray(stat_b, np.int64)
    lengths, dims, weights, coefs = [], [], [], []
    for start in range(0, len(a), _BUILD_BLOCK):
        pa_, pb = a[start : start + _BUILD_BLOCK], b[start : start + _BUILD_BLOCK]
        sa, sb = stat_a[start : start + _BUILD_BLOCK], stat_b[start : start + _BUILD_BLOCK]
        keep = select_dims_block(kernels.pair_ratios(mean, variance, sa, sb), settings)  # crossvar.cross_ratio's bits
        keep[~(usable[sa] & usable[sb])] = True
        coef = np.zeros((len(pa_), 2), dtype=np.float64)
        for side, cls in ((0, pa_), (1, pb)):
            rows_sq = vectors64[cls] * vectors64[cls] if squares is None else squares[cls]
            sums = np.einsum("ij,ij->i", keep, rows_sq)
            with np.errstate(divide="ignore"):
                coef[:, side] = np.where(sums > 0, 1.0 / np.sqrt(sums), 0.0)
        rows, cols = np.nonzero(keep)  # row-major: each pair's dims ascending
        lengths.append(keep.sum(axis=1).astype(np.int64))
        dims.append(cols.astype(np.uint16))
        weights.append(vectors64[pa_[rows], cols] * coef[rows, 0] - vectors64[pb[rows], cols] * coef[rows, 1])
        coefs.append(coef)
    if not lengths:
        return np.zeros(0, np.int64), np.zeros(0, np.uint16), np.zeros(0, np.float64), np.zeros((0, 2))
    return np.concatenate(lengths), np.concatenate(dims), np.concatenate(weights), np.concatenate(coefs)


def sample_lengths(moments: ClassMoments, settings: MaskSettings, n_pairs: int = 2000, seed: int = 0) -> np.ndarray:
    """Mask sizes of up to n_pairs distinct pairs drawn with a fixed seed (the model's summary of
    its masks when it stores none)."""
    n_classes = moments.n_classes
    total = n_classes * (n_classes - 1) // 2
    if total == 0:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n_classes, size=4 * n_pairs)
    b = rng.integers(0, n_classes, size=4 * n_pairs)
    keys = np.unique(np.minimum(a, b) * n_classes + np.maximum(a, b))
    keys = keys[(keys // n_classes) != (keys % n_classes)][:n_pairs]
    usable = moments.count >= settings.min_class_count
    vectors = np.zeros((n_classes, moments.dim))  # lengths only: the weights are not used
    lengths, *_ = build_pairs(vectors, np.ascontiguousarray(moments.mean), np.ascontiguousarray(moments.variance), usable, settings,
                              keys // n_classes, keys % n_classes)
    return lengths


class PairCache:
    """The pairs of one view built so far: pair (a, b) lives at a slot, its dims at
    dims[starts[slot]:ends[slot]] and its weights beside them."""

    def __init__(self, vectors64: np.ndarray, moments: ClassMoments, settings: MaskSettings,
                 max_bytes: int = CACHE_BYTES):
        self.vectors64 = np.ascontiguousarray(vectors64, dtype=np.float64)
        self.mean = np.ascontiguousarray(moments.mean, dtype=np.float64)
        self.variance = np.ascontiguousarray(moments.variance, dtype=np.float64)
        self.usable = moments.count >= settings.min_class_count
        self.settings = settings
        self.n_classes = len(self.vectors64)
        self.max_bytes = max_bytes
        self.built = 0  # pairs built over the cache's life (tests, bench)
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._slot: dict[int, int] = {}
        self.starts = np.zeros(0, np.int64)
        self.ends = np.zeros(0, np.int64)
        self.dims = np.zeros(1024, np.uint16)
        self.weights = np.zeros(1024, np.float64)
        self._used = 0

    @property
    def nbytes(self) -> int:
        return int(self._used * 10 + len(self.starts) * 16)

    def __len__(self) -> int:
        return len(self._slot)

    def slots(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """The slot of each pair (lo[i], hi[i]), lo < hi, building the ones not held yet."""
        with self._lock:  # a worker may run several batches in threads
            keys = np.asarray(lo, np.int64) * self.n_classes + np.asarray(hi, np.int64)
            unique, inverse = np.unique(keys, return_inverse=True)
            found = np.fromiter((self._slot.get(k, -1) for k in unique.tolist()), np.int64, len(unique))
            missing = unique[found < 0]
            if len(missing):
                if self.nbytes + len(missing) * 12 * self.vectors64.shape[1] > self.max_bytes and len(self._slot):
                    self._reset()  # too big: start over with this batch's pairs
                    missing = unique
                lo_, hi_ = missing // self.n_classes, missing % self.n_classes
                lengths, dims, weights, _ = build_pairs(self.vectors64, self.mean, self.variance, self.usable,
                                                        self.settings, lo_, hi_, None, *self.stat_rows(lo_, hi_))
                self._append(missing, lengths, dims, weights)
                found = np.fromiter((self._slot[k] for k in unique.tolist()), np.int64, len(unique))
            return found[inverse.reshape(-1)]

    def stat_rows(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The statistics' rows that mask the pairs (lo, hi): their own classes'."""
        return None, None

    def _append(self, keys: np.ndarray, lengths: np.ndarray, dims: np.ndarray, weights: np.ndarray) -> None:
        need = self._used + len(dims)
        if need > len(self.dims):  # doubling, but never past the budget but for what this batch needs
            capacity = max(need, min(2 * len(self.dims), self.max_bytes // 10))
            self.dims = np.concatenate([self.dims[: self._used], np.zeros(capacity - self._used, np.uint16)])
            self.weights = np.concatenate([self.weights[: self._used], np.zeros(capacity - self._used)])
        self.dims[self._used : need] = dims
        self.weights[self._used : need] = weights
        ends = self._used + np.cumsum(lengths)
        first = len(self.starts)
        self.starts = np.concatenate([self.starts, ends - lengths])
        self.ends = np.concatenate([self.ends, ends])
        self._used = need
        self.built += len(keys)
        self._slot.update(zip(keys.tolist(), range(first, first + len(keys))))


class TreePairCache(PairCache):
    """The pairs of a view whose classes are the leaves of a tree (core/tree.py): a match between
    two leaves is played on the dims that separate the two siblings holding them (their lowest
    common ancestor's children; the leaves themselves when they are siblings), with the leaves'
    own prompts. Only sibling pairs ever make a mask, and a pair of sibling leaves gets exactly
    its flat mask (tested)."""

    def __init__(self, vectors64: np.ndarray, tree: Tree, moments: ClassMoments, settings: MaskSettings,
                 max_bytes: int = CACHE_BYTES):
        super().__init__(vectors64, node_moments(tree, moments), settings, max_bytes)
        self.tree = tree

    def stat_rows(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return sibling_ancestors(self.tree, lo, hi)


# One PairCache per model per Python worker: the model ships a token (core/methods.py) and every
# task of that worker that classifies with it finds the same cache. Two models at most (each up to
# CACHE_BYTES): a run classifies with one.
_WORKER_CACHES: OrderedDict[str, PairCache] = OrderedDict()
_WORKER_CACHES_MAX = 2
_WORKER_LOCK = threading.Lock()


def worker_cache(token: str, build: Callable[[], PairCache]) -> PairCache:
    """The cache of the model that `token` names in this process, built on first use."""
    with _WORKER_LOCK:
        cache = _WORKER_CACHES.get(token)
        if cache is None:
            cache = _WORKER_CACHES[token] = build()
            while len(_WORKER_CACHES) > _WORKER_CACHES_MAX:
                _WORKER_CACHES.popitem(last=False)
        _WORKER_CACHES.move_to_end(token)
        return cache
