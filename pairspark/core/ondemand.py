"""The tournament and the round robin over pairs made on demand (core/pair_cache.py).

The same brackets as core/tournament.py, played a round at a time for the whole batch: every
item's survivors are shuffled by the draws of the compiled bracket (draw(item_key, r, j), a
Fisher-Yates pass from the last position down), paired off in order, the odd one out getting a
bye; the round's distinct pairs are looked up (or built) in the cache at once, and its matches
played by one compiled loop (kernels.play_matches). An item's bracket never depends on the
others in its batch, so the winners are those of play_tournament on the stored masks.
"""

from __future__ import annotations

import numpy as np

from pairspark.core import kernels
from pairspark.core.pair_cache import PairCache
from pairspark.core.tournament import splitmix64


def _entrants(candidates: np.ndarray | None, n: int, n_classes: int) -> np.ndarray:
    if candidates is None:
        return np.broadcast_to(np.arange(n_classes, dtype=np.int64), (n, n_classes)).copy()
    return np.array(candidates, dtype=np.int64, copy=True)


def _play(x: np.ndarray, cache: PairCache, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Winners of the matches a[i, m] vs b[i, m] for item i (arrays (n, M)): shape (n, M)."""
    n, m = a.shape
    lo, hi = np.minimum(a, b).reshape(-1), np.maximum(a, b).reshape(-1)
    rows = np.repeat(np.arange(n, dtype=np.int64), m)
    slots = cache.slots(lo, hi)
    return kernels.play_matches(x, rows, lo, hi, slots, cache.starts, cache.ends, cache.dims,
                                cache.weights).reshape(n, m)


def play_tournament_ondemand(x: np.ndarray, cache: PairCache, item_keys: np.ndarray,
                             candidates: np.ndarray | None = None) -> np.ndarray:
    """Winning class per row of x (n, D): core/tournament.play_tournament's bracket, with the
    pairs from `cache`. `candidates` (n, k) ascending per row, or None for every class."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    n = len(x)
    if cache.n_classes == 1 or n == 0:
        return np.zeros(n, dtype=np.int64)
    survivors = _entrants(candidates, n, cache.n_classes)
    keys = np.ascontiguousarray(item_keys).astype(np.uint64, copy=False)
    rows = np.arange(n)
    round_index = 0
    while survivors.shape[1] > 1:
        width = survivors.shape[1]
        round_base = np.uint64(round_index) * np.uint64(1 << 32)
        with np.errstate(over="ignore"):
            for j in range(width - 1, 0, -1):
                draw = splitmix64(keys ^ splitmix64(round_base + np.uint64(j)))
                k = (draw % np.uint64(j + 1)).astype(np.int64)
                moved = survivors[rows, k]
                survivors[rows, k] = survivors[:, j]
                survivors[:, j] = moved
        half = width // 2
        winners = _play(x, cache, survivors[:, 0 : 2 * half : 2], survivors[:, 1 : 2 * half : 2])
        if width % 2 == 1:
            winners = np.concatenate([winners, survivors[:, width - 1 :]], axis=1)
        survivors = winners
        round_index += 1
    return survivors[:, 0].astype(np.int64)


def play_round_robin_ondemand(x: np.ndarray, cache: PairCache, cosines: np.ndarray,
                              candidates: np.ndarray | None = None) -> np.ndarray:
    """core/tournament.play_round_robin with the pairs from `cache`: every match among an item's
    candidates; most wins, ties to the higher base cosine, then the lower class index."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    n = len(x)
    if cache.n_classes == 1 or n == 0:
        return np.zeros(n, dtype=np.int64)
    entrants = _entrants(candidates, n, cache.n_classes)
    width = entrants.shape[1]
    u, v = np.triu_indices(width, k=1)
    winners = _play(x, cache, entrants[:, u], entrants[:, v])  # (n, M) class indices
    # wins per entrant position: the winner is entrants[:, u] or entrants[:, v]
    position = np.where(winners == entrants[:, u], u[None, :], v[None, :])
    wins = np.zeros((n, width), dtype=np.int64)
    np.add.at(wins, (np.repeat(np.arange(n), len(u)), position.reshape(-1)), 1)
    cos = np.asarray(cosines, dtype=np.float64)[np.arange(n)[:, None], entrants]
    # most wins, then the higher cosine, then the lower class index
    most = wins == wins.max(axis=1, keepdims=True)
    best_cos = np.where(most, cos, -np.inf).max(axis=1, keepdims=True)
    tied = most & (cos == best_cos)
    return np.where(tied, entrants, np.iinfo(np.int64).max).min(axis=1)
