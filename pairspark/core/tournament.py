"""The pairwise tournament (METHOD.md step 6), vectorised over a batch of items.

A match a vs b compares the item's cosine to t_a and to t_b on the pair's masked dimensions.
The item's masked norm is common to both sides, so the winner is the sign of x . w_ab with
w_ab = t_a|mask / ||t_a|mask|| - t_b|mask / ||t_b|mask||  (a < b; a wins when the dot is >= 0).

The bracket: survivors are shuffled every round by keys drawn from (item key, round, slot),
paired off in order, and an odd one out gets a bye. The item key is a 64-bit hash of
(run seed, item id), so the bracket never depends on partitioning, batch or row order.
"""

from __future__ import annotations

import numpy as np

from pairspark.core.masks import class_pairs

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

# Pair scores are computed in chunks of items so that a (chunk, P) float64 block stays ~64 MB.
_SCORE_BLOCK_ELEMENTS = 8 * 1024 * 1024


def splitmix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic is intended)."""
    z = np.asarray(z, dtype=np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def bracket_keys(item_keys: np.ndarray, round_index: int, width: int) -> np.ndarray:
    """(n, width) uint64 shuffle keys for one round; the bracket order is their argsort."""
    item_keys = np.asarray(item_keys).astype(np.uint64, copy=False)
    slots = splitmix64(np.arange(width, dtype=np.uint64) + np.uint64(round_index) * np.uint64(1 << 32))
    return splitmix64(item_keys[:, None] ^ slots[None, :])


def pair_index_matrix(n_classes: int) -> np.ndarray:
    """(C, C) int: index into class_pairs(C) of the pair {a, b}; -1 on the diagonal."""
    index = np.full((n_classes, n_classes), -1, dtype=np.int64)
    pairs = class_pairs(n_classes)
    index[pairs[:, 0], pairs[:, 1]] = np.arange(len(pairs))
    index[pairs[:, 1], pairs[:, 0]] = np.arange(len(pairs))
    return index


def pair_weights(class_vectors: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """(P, D) float64 match vectors w_ab for the pairs of class_pairs(C), zero off the mask."""
    class_vectors = np.asarray(class_vectors, dtype=np.float64)
    n_classes, dim = class_vectors.shape
    pairs = class_pairs(n_classes)
    if len(masks) != len(pairs):
        raise ValueError(f"expected {len(pairs)} masks for {n_classes} classes, got {len(masks)}")
    weights = np.zeros((len(pairs), dim), dtype=np.float64)
    for p, ((a, b), dims) in enumerate(zip(pairs, masks)):
        ta, tb = class_vectors[a, dims], class_vectors[b, dims]
        na, nb = np.linalg.norm(ta), np.linalg.norm(tb)
        # A prompt vector that is zero on the mask cannot win on it: its side contributes 0.
        weights[p, dims] = (ta / na if na > 0 else 0.0) - (tb / nb if nb > 0 else 0.0)
    return weights


def _play(scores: np.ndarray, pair_index: np.ndarray, item_keys: np.ndarray, n_classes: int) -> np.ndarray:
    n = scores.shape[0]
    survivors = np.broadcast_to(np.arange(n_classes, dtype=np.int64), (n, n_classes))
    round_index = 0
    while survivors.shape[1] > 1:
        width = survivors.shape[1]
        order = np.argsort(bracket_keys(item_keys, round_index, width), axis=1, kind="stable")
        shuffled = np.take_along_axis(survivors, order, axis=1)
        half = width // 2
        left, right = shuffled[:, 0 : 2 * half : 2], shuffled[:, 1 : 2 * half : 2]
        low, high = np.minimum(left, right), np.maximum(left, right)
        match_scores = np.take_along_axis(scores, pair_index[low, high], axis=1)
        winners = np.where(match_scores >= 0, low, high)
        survivors = winners if width % 2 == 0 else np.concatenate([winners, shuffled[:, -1:]], axis=1)
        round_index += 1
    return survivors[:, 0]


def play_tournament(
    x: np.ndarray, weights: np.ndarray, item_keys: np.ndarray, n_classes: int
) -> np.ndarray:
    """Winning class index per row of x (n, D), given pair weights (P, D) and item keys (n,)."""
    n = x.shape[0]
    if n_classes == 1 or n == 0:
        return np.zeros(n, dtype=np.int64)
    pair_index = pair_index_matrix(n_classes)
    chunk = max(1, _SCORE_BLOCK_ELEMENTS // max(1, weights.shape[0]))
    winners = np.empty(n, dtype=np.int64)
    x = np.asarray(x, dtype=weights.dtype)
    weights_t = np.ascontiguousarray(weights.T)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        scores = x[start:stop] @ weights_t
        winners[start:stop] = _play(scores, pair_index, item_keys[start:stop], n_classes)
    return winners
