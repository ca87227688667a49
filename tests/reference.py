"""Plain reference implementations the tests compare the library against (not used by it)."""

from __future__ import annotations

import numpy as np

from pairspark.core.masks import PairMasks
from pairspark.core.tournament import splitmix64


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; a zero row stays zero (validation quarantines those upstream)."""
    x = np.asarray(x)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1).astype(x.dtype)


def bracket_draws(item_key: int, round_index: int, width: int) -> np.ndarray:
    """(width,) uint64 draws of one item's Fisher-Yates pass in one round (draw j for slot j)."""
    slots = splitmix64(np.arange(width, dtype=np.uint64) + np.uint64(round_index) * np.uint64(1 << 32))
    return splitmix64(np.uint64(item_key) ^ slots)


def shuffle_survivors(survivors: list[int], item_key: int, round_index: int) -> list[int]:
    """The round's bracket order: Fisher-Yates from the last slot down (reference, one item)."""
    out = list(survivors)
    draws = bracket_draws(item_key, round_index, len(out))
    for j in range(len(out) - 1, 0, -1):
        k = int(draws[j] % np.uint64(j + 1))
        out[j], out[k] = out[k], out[j]
    return out


def masks_from_lists(dims: list) -> PairMasks:
    """PairMasks (CSR form) from one list of kept dims per pair."""
    lengths = np.array([len(d) for d in dims], dtype=np.int64)
    flat = np.concatenate([np.asarray(d, dtype=np.int64) for d in dims]) if len(dims) else np.zeros(0, np.int64)
    return PairMasks(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), flat.astype(np.uint16))
