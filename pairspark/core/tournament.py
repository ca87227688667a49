"""The pairwise tournament (METHOD.md step 6).

A match a vs b compares the item's cosine to t_a and to t_b on the pair's masked dimensions.
The item's masked norm is common to both sides, so the winner is the sign of x . w_ab with
w_ab = t_a|mask * coef_a - t_b|mask * coef_b, coef = 1 / ||t|mask|| (a < b; a wins when >= 0).

Only the C - 1 matches an item actually plays are computed, each over its mask's dimensions
only, straight from the packed masks (masks.PairMasks, 2 bytes per kept dim): no dense (P, D)
weight matrix exists, so 1,000 classes fit in ~100 MB; the weights at the kept dims are stored
beside them while that stays small (pair_weights). The loop runs in a numba kernel (kernels.py); each dot product
is summed in float64 in ascending dimension order, so an answer never depends on the batch.

The bracket: the item's candidates (every class, or its top-k by base cosine, ascending) start
as the survivors; in round r the survivors are shuffled by a Fisher-Yates pass whose j-th draw is
draw(item_key, r, j) = splitmix64(item_key ^ splitmix64(r * 2^32 + j)), paired off in order,
and an odd one out (the last) gets a bye. The item key is a 64-bit hash of (run seed, item id),
so the bracket never depends on partitioning, batch or row order.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa

from pairspark.core import kernels
from pairspark.core.kernels import _GOLDEN, _MIX1, _MIX2  # the compiled loop's splitmix64 constants
from pairspark.core.masks import PairMasks, class_pairs

_PAIR_BLOCK = 4096
# Stored pair weights cost 8 bytes per kept dim in every Python worker: kept below this, formed
# on the fly above it (the same answers either way; kernels.py).
WEIGHTS_LIMIT_BYTES = 64 * 2**20


# candidates="auto" (the default): the faithful bracket over every class up to AUTO_FULL_BRACKET
# classes; beyond, each item's AUTO_CANDIDATES best classes by base cosine (15 matches instead of
# C - 1: at 1,000 classes the full bracket runs at 0.22x base). On fashion_clip (23 classes) the
# full bracket's winner is among base's top 6 on every item of both views (docs/METHOD.md step 6).
AUTO_FULL_BRACKET = 64
AUTO_CANDIDATES = 16


def resolve_candidates(candidates: int | str, n_classes: int) -> int:
    """The bracket size a candidates setting means for n_classes: 0 for every class, else K."""
    if candidates == "auto":
        return 0 if n_classes <= AUTO_FULL_BRACKET else AUTO_CANDIDATES
    return int(candidates)


def splitmix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic is intended)."""
    with np.errstate(over="ignore"):
        z = np.asarray(z, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def bracket_keys(item_ids: pa.Array, seed: int) -> np.ndarray:
    """Each item's bracket key (uint64) from its item_id as a string: the same bits as the JVM's
    xxhash64(seed, cast(item_id as string)) (spark/transform.bracket_key), so a reader outside the
    JVM plays the same brackets. A null id gets an arbitrary key (such a row is never classified)."""
    ids = item_ids.cast(pa.large_string()) if not pa.types.is_large_string(item_ids.type) else item_ids
    if len(ids) == 0:
        return np.zeros(0, np.uint64)
    _, offsets, data = ids.buffers()
    offsets = np.frombuffer(offsets, dtype=np.int64)[ids.offset : ids.offset + len(ids) + 1]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return kernels.spark_xxhash64_strings(data, offsets, int(seed))


def pair_index(a: np.ndarray, b: np.ndarray, n_classes: int) -> np.ndarray:
    """Row of the pair {a, b} (a < b) in class_pairs(n_classes)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    return a * (2 * n_classes - a - 1) // 2 + (b - a - 1)


def pair_coefficients(class_vectors: np.ndarray, masks: PairMasks) -> np.ndarray:
    """(P, 2) float64: 1 / ||t_a|mask||, 1 / ||t_b|mask|| per pair (0 where that norm is 0).

    A prompt vector that is zero on the mask cannot win on it: its side contributes 0.
    """
    t = np.asarray(class_vectors, dtype=np.float64)
    squares = t * t
    pairs = class_pairs(len(t))
    masks = masks if masks.dim else replace(masks, dim=t.shape[1])
    coef = np.zeros((len(pairs), 2), dtype=np.float64)
    for start in range(0, len(pairs), _PAIR_BLOCK):
        stop = min(len(pairs), start + _PAIR_BLOCK)
        keep = masks.keep(start, stop)
        for side in (0, 1):
            sums = np.einsum("ij,ij->i", keep, squares[pairs[start:stop, side]])
            with np.errstate(divide="ignore"):
                coef[start:stop, side] = np.where(sums > 0, 1.0 / np.sqrt(sums), 0.0)
    return coef


def pair_weights(class_vectors: np.ndarray, masks: PairMasks, coefficients: np.ndarray,
                 limit_bytes: int = WEIGHTS_LIMIT_BYTES) -> np.ndarray | None:
    """w_ab at every kept dim of every pair (float64, aligned with the CSR dims), for a faster
    match; None for bit masks or when they would exceed limit_bytes."""
    if masks.is_bits or len(masks.dims) * 8 > limit_bytes:
        return None
    return kernels.pair_weights(np.ascontiguousarray(class_vectors, dtype=np.float64), masks.indptr, masks.dims,
                                np.ascontiguousarray(coefficients, dtype=np.float64))


def play_tournament(
    x: np.ndarray,
    class_vectors: np.ndarray,
    masks: PairMasks,
    coefficients: np.ndarray,
    item_keys: np.ndarray,
    candidates: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Winning class index per row of x (n, D); class vectors (C, D), masks of every pair, keys (n,).

    `candidates` (n, k), each row in ascending class order: only those classes enter the item's
    bracket (see cosine.top_candidates); None: every class does (the faithful method).
    `weights`: pair_weights of the same masks (faster, same answers), or None."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    n_classes = len(class_vectors)
    if n_classes == 1 or len(x) == 0:
        return np.zeros(len(x), dtype=np.int64)
    return kernels.tournament(
        x,
        np.ascontiguousarray(class_vectors, dtype=np.float64),
        *_kernel_masks(masks),
        np.ascontiguousarray(coefficients, dtype=np.float64),
        _kernel_weights(weights),
        np.ascontiguousarray(item_keys).astype(np.uint64, copy=False),
        np.zeros((len(x), 0), np.int64) if candidates is None else np.ascontiguousarray(candidates, dtype=np.int64),
    ).astype(np.int64)


def _kernel_weights(weights: np.ndarray | None) -> np.ndarray:
    return np.zeros(0, np.float64) if weights is None else weights


def _kernel_masks(masks: PairMasks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, dims, bits) for the kernel: the unused form as empty arrays."""
    if masks.is_bits:
        return np.zeros(1, np.int64), np.zeros(0, np.uint16), masks.bits
    return masks.indptr, masks.dims, np.zeros((0, 1), np.uint64)


def play_round_robin(
    x: np.ndarray,
    class_vectors: np.ndarray,
    masks: PairMasks,
    coefficients: np.ndarray,
    cosines: np.ndarray,
    candidates: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Every match among an item's candidates (all classes, or its top-k) is played; the class
    with the most wins takes it, ties going to the higher base cosine (then the lower index).
    Deterministic: no bracket, no seed. C(C-1)/2 matches per item, so use candidates for many classes."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    if len(class_vectors) == 1 or len(x) == 0:
        return np.zeros(len(x), dtype=np.int64)
    return kernels.round_robin(
        x,
        np.ascontiguousarray(class_vectors, dtype=np.float64),
        *_kernel_masks(masks),
        np.ascontiguousarray(coefficients, dtype=np.float64),
        _kernel_weights(weights),
        np.zeros((len(x), 0), np.int64) if candidates is None else np.ascontiguousarray(candidates, dtype=np.int64),
        np.ascontiguousarray(cosines, dtype=np.float64),
    ).astype(np.int64)
