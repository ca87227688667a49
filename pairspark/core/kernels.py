"""Compiled inner loops (numba). Each has a plain-numpy reference in the tests.

Why compiled: an item plays only C - 1 of the C(C-1)/2 pairs, each over its mask's dimensions
(often ~100 of 768). numpy can only do that as one dense product against every pair (P x D per
item: 25x the work of cosine at 50 classes) or as gathers with a Python loop per pair; a small
loop per item does exactly the needed work and reads the packed masks directly. The weights
w = t_a * coef_a - t_b * coef_b are stored beside the CSR dims when they are small (8 bytes per
kept dim: 1.7 MB at 50 classes; a match then reads one array instead of two class rows, 1.4x
faster); above a size limit, or with bit masks, they are formed on the fly. Both give the same
bits: w is the same float64 expression either way, and each dot is summed in the same order.
"""

from __future__ import annotations

import os

import numba
import numpy as np

# numba can cache compiled code beside a real source file; not when imported from a zip (--py-files).
_CACHE = os.path.isfile(__file__)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_DEBRUIJN = np.uint64(0x03F79D71B4CB0A89)
# _DEBRUIJN_INDEX[(lone_bit * _DEBRUIJN) >> 58] = the index of that bit (de Bruijn sequence)
_DEBRUIJN_INDEX = np.zeros(64, dtype=np.int64)
with np.errstate(over="ignore"):
    for _i in range(64):
        _DEBRUIJN_INDEX[int(((np.uint64(1) << np.uint64(_i)) * _DEBRUIJN) >> np.uint64(58))] = _i


@numba.njit(cache=_CACHE, nogil=True, inline="always")
def _splitmix64(z):
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=_CACHE, nogil=True)
def _match(x_row, t_a, t_b, coef_a, coef_b, dims):
    """x . w_ab over the pair's dims (ascending), float64; four accumulators, fixed order."""
    s0 = s1 = s2 = s3 = 0.0
    e = 0
    end = dims.shape[0]
    while e + 3 < end:
        d0, d1, d2, d3 = dims[e], dims[e + 1], dims[e + 2], dims[e + 3]
        s0 += x_row[d0] * (t_a[d0] * coef_a - t_b[d0] * coef_b)
        s1 += x_row[d1] * (t_a[d1] * coef_a - t_b[d1] * coef_b)
        s2 += x_row[d2] * (t_a[d2] * coef_a - t_b[d2] * coef_b)
        s3 += x_row[d3] * (t_a[d3] * coef_a - t_b[d3] * coef_b)
        e += 4
    while e < end:
        d0 = dims[e]
        s0 += x_row[d0] * (t_a[d0] * coef_a - t_b[d0] * coef_b)
        e += 1
    return (s0 + s1) + (s2 + s3)


@numba.njit(cache=_CACHE, nogil=True)
def _match_weighted(x_row, weights, dims):
    """_match with the pair's weights stored (aligned with its dims); the same sums in the same order."""
    s0 = s1 = s2 = s3 = 0.0
    e = 0
    end = dims.shape[0]
    while e + 3 < end:
        s0 += x_row[dims[e]] * weights[e]
        s1 += x_row[dims[e + 1]] * weights[e + 1]
        s2 += x_row[dims[e + 2]] * weights[e + 2]
        s3 += x_row[dims[e + 3]] * weights[e + 3]
        e += 4
    while e < end:
        s0 += x_row[dims[e]] * weights[e]
        e += 1
    return (s0 + s1) + (s2 + s3)


@numba.njit(cache=_CACHE, nogil=True)
def _pair_weights(class_vectors, indptr, dims, coefficients):
    n_classes = class_vectors.shape[0]
    weights = np.empty(dims.shape[0], dtype=np.float64)
    p = 0
    for a in range(n_classes):
        for b in range(a + 1, n_classes):
            coef_a = coefficients[p, 0]
            coef_b = coefficients[p, 1]
            for e in range(indptr[p], indptr[p + 1]):
                d = dims[e]
                weights[e] = class_vectors[a, d] * coef_a - class_vectors[b, d] * coef_b
            p += 1
    return weights


def pair_weights(class_vectors, indptr, dims, coefficients):
    """(len(dims),) float64: w_ab at each kept dim of each pair, aligned with the CSR dims."""
    return _pair_weights(class_vectors, indptr, dims, coefficients)


@numba.njit(cache=_CACHE, nogil=True)
def _match_bits(x_row, t_a, t_b, coef_a, coef_b, words, debruijn_index):
    """_match over the set bits of a packed mask (ascending dims; one accumulator, fixed order)."""
    score = 0.0
    for w in range(words.shape[0]):
        word = words[w]
        base = w * 64
        while word != np.uint64(0):
            low = word & (~word + np.uint64(1))
            d = base + debruijn_index[(low * _DEBRUIJN) >> np.uint64(58)]
            score += x_row[d] * (t_a[d] * coef_a - t_b[d] * coef_b)
            word ^= low
    return score


@numba.njit(cache=_CACHE, nogil=True)
def _entrants(candidates, i, n_classes, out):
    """Fill out[:width] with item i's classes (every class when candidates has 0 columns)."""
    if candidates.shape[1] == 0:
        for c in range(n_classes):
            out[c] = c
        return n_classes
    for c in range(candidates.shape[1]):
        out[c] = candidates[i, c]
    return candidates.shape[1]


@numba.njit(cache=_CACHE, nogil=True)
def _winner(x_row, class_vectors, a, b, indptr, dims, bits, coefficients, weights, debruijn_index):
    """The winner of the match a vs b (either order) on the pair's mask: the lower class index
    on a tie. bits has 0 rows when the masks are in CSR form; weights has 0 entries when they
    are formed on the fly."""
    if a > b:
        a, b = b, a
    n_classes = class_vectors.shape[0]
    p = a * (2 * n_classes - a - 1) // 2 + (b - a - 1)
    if weights.shape[0] > 0:
        score = _match_weighted(x_row, weights[indptr[p] : indptr[p + 1]], dims[indptr[p] : indptr[p + 1]])
    elif bits.shape[0] > 0:
        score = _match_bits(x_row, class_vectors[a], class_vectors[b], coefficients[p, 0], coefficients[p, 1],
                            bits[p], debruijn_index)
    else:
        score = _match(x_row, class_vectors[a], class_vectors[b], coefficients[p, 0], coefficients[p, 1],
                       dims[indptr[p] : indptr[p + 1]])
    return a if score >= 0.0 else b


@numba.njit(cache=_CACHE, nogil=True)
def _tournament(x, class_vectors, indptr, dims, bits, coefficients, weights, item_keys, candidates, debruijn_index):
    n = x.shape[0]
    n_classes = class_vectors.shape[0]
    winners = np.empty(n, dtype=np.int32)
    survivors = np.empty(n_classes, dtype=np.int64)
    for i in range(n):
        key = item_keys[i]
        width = _entrants(candidates, i, n_classes, survivors)
        round_index = 0
        while width > 1:
            round_base = np.uint64(round_index) * np.uint64(1 << 32)
            for j in range(width - 1, 0, -1):
                draw = _splitmix64(key ^ _splitmix64(round_base + np.uint64(j)))
                k = np.int64(draw % np.uint64(j + 1))
                tmp = survivors[j]
                survivors[j] = survivors[k]
                survivors[k] = tmp
            half = width // 2
            for m in range(half):
                a = survivors[2 * m]
                b = survivors[2 * m + 1]
                survivors[m] = _winner(x[i], class_vectors, a, b, indptr, dims, bits, coefficients, weights, debruijn_index)
            if width % 2 == 1:
                survivors[half] = survivors[width - 1]
            width = half + width % 2
            round_index += 1
        winners[i] = survivors[0]
    return winners


def tournament(x, class_vectors, indptr, dims, bits, coefficients, weights, item_keys, candidates):
    """Winners (n,) int32. Arrays C-contiguous: float64 x, class vectors, coefficients; masks
    (masks.PairMasks) as int64 indptr + uint16 dims, or as (P, W) uint64 bits (then indptr and
    dims are unused; else bits has 0 rows); float64 weights from pair_weights (CSR only) or 0
    entries; uint64 keys; int64 candidates (n, k), each row the classes that enter the item's
    bracket in ascending order, or (n, 0) for every class."""
    return _tournament(x, class_vectors, indptr, dims, bits, coefficients, weights, item_keys, candidates, _DEBRUIJN_INDEX)


@numba.njit(cache=_CACHE, nogil=True)
def class_moments(x, labels, n_classes):
    """count (C,), mean (C, D), m2 (C, D) of the rows of x grouped by label: two passes over the
    batch (sums, then squared deviations from the class mean), float64, rows in order."""
    n, dim = x.shape
    count = np.zeros(n_classes, dtype=np.int64)
    mean = np.zeros((n_classes, dim), dtype=np.float64)
    m2 = np.zeros((n_classes, dim), dtype=np.float64)
    for i in range(n):
        c = labels[i]
        count[c] += 1
        for d in range(dim):
            mean[c, d] += x[i, d]
    for c in range(n_classes):
        if count[c] > 0:
            for d in range(dim):
                mean[c, d] /= count[c]
    for i in range(n):
        c = labels[i]
        for d in range(dim):
            dev = x[i, d] - mean[c, d]
            m2[c, d] += dev * dev
    return count, mean, m2


@numba.njit(cache=_CACHE, nogil=True)
def class_sums(x, labels, keep, n_classes):
    """weight (C,), sums (C, D), sumsq (C, D) of the kept rows of x grouped by label, float64,
    rows in order: one pass, no copy of the rows (LabelStats.from_labels)."""
    n, dim = x.shape
    weight = np.zeros(n_classes, dtype=np.float64)
    sums = np.zeros((n_classes, dim), dtype=np.float64)
    sumsq = np.zeros((n_classes, dim), dtype=np.float64)
    for i in range(n):
        if not keep[i]:
            continue
        c = labels[i]
        weight[c] += 1.0
        for d in range(dim):
            v = x[i, d]
            sums[c, d] += v
            sumsq[c, d] += v * v
    return weight, sums, sumsq


@numba.njit(cache=_CACHE, nogil=True)
def _round_robin(x, class_vectors, indptr, dims, bits, coefficients, weights, candidates, cosines, debruijn_index):
    n = x.shape[0]
    n_classes = class_vectors.shape[0]
    winners = np.empty(n, dtype=np.int32)
    entrants = np.empty(n_classes, dtype=np.int64)
    wins = np.zeros(n_classes, dtype=np.int64)
    for i in range(n):
        width = _entrants(candidates, i, n_classes, entrants)
        for u in range(width):
            wins[entrants[u]] = 0
        for u in range(width):
            for v in range(u + 1, width):
                a = entrants[u]
                b = entrants[v]
                wins[_winner(x[i], class_vectors, a, b, indptr, dims, bits, coefficients, weights, debruijn_index)] += 1
        best = entrants[0]
        for u in range(1, width):
            c = entrants[u]
            if wins[c] > wins[best] or (wins[c] == wins[best] and (cosines[i, c] > cosines[i, best]
                                                                    or (cosines[i, c] == cosines[i, best] and c < best))):
                best = c
        winners[i] = best
    return winners


def round_robin(x, class_vectors, indptr, dims, bits, coefficients, weights, candidates, cosines):
    """Winners (n,) int32 of an all-play-all among each item's candidates (same arrays as
    `tournament`, plus the (n, C) float64 base cosines): most wins, ties to the higher base
    cosine, then the lower class index."""
    return _round_robin(x, class_vectors, indptr, dims, bits, coefficients, weights, candidates, cosines, _DEBRUIJN_INDEX)


# ---- Spark's xxhash64, so an item's bracket key can be computed outside the JVM ----
# Spark's XXH64 (org.apache.spark.sql.catalyst.expressions.XXH64): the reference xxHash64 over
# little-endian bytes, plus hashInt/hashLong for a 4- or 8-byte value. `xxhash64(a, b)` hashes a
# with seed 42, then b with the result as its seed; a null adds nothing.
_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_P4 = np.uint64(0x85EBCA77C2B2AE63)
_P5 = np.uint64(0x27D4EB2F165667C5)


@numba.njit(cache=_CACHE, nogil=True, inline="always")
def _rotl(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@numba.njit(cache=_CACHE, nogil=True, inline="always")
def _fmix(h):
    h ^= h >> np.uint64(33)
    h *= _P2
    h ^= h >> np.uint64(29)
    h *= _P3
    h ^= h >> np.uint64(32)
    return h


@numba.njit(cache=_CACHE, nogil=True, inline="always")
def _read_le(data, offset, width):
    value = np.uint64(0)
    for b in range(width - 1, -1, -1):
        value = (value << np.uint64(8)) | np.uint64(data[offset + b])
    return value


@numba.njit(cache=_CACHE, nogil=True)
def _xxh64_bytes(data, start, end, seed):
    offset = start
    length = end - start
    if length >= 32:
        v1 = seed + _P1 + _P2
        v2 = seed + _P2
        v3 = seed
        v4 = seed - _P1
        while offset <= end - 32:
            v1 = _rotl(v1 + _read_le(data, offset, 8) * _P2, 31) * _P1
            v2 = _rotl(v2 + _read_le(data, offset + 8, 8) * _P2, 31) * _P1
            v3 = _rotl(v3 + _read_le(data, offset + 16, 8) * _P2, 31) * _P1
            v4 = _rotl(v4 + _read_le(data, offset + 24, 8) * _P2, 31) * _P1
            offset += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = (h ^ (_rotl(v1 * _P2, 31) * _P1)) * _P1 + _P4
        h = (h ^ (_rotl(v2 * _P2, 31) * _P1)) * _P1 + _P4
        h = (h ^ (_rotl(v3 * _P2, 31) * _P1)) * _P1 + _P4
        h = (h ^ (_rotl(v4 * _P2, 31) * _P1)) * _P1 + _P4
    else:
        h = seed + _P5
    h += np.uint64(length)
    while offset <= end - 8:
        h ^= _rotl(_read_le(data, offset, 8) * _P2, 31) * _P1
        h = _rotl(h, 27) * _P1 + _P4
        offset += 8
    if offset + 4 <= end:
        h ^= _read_le(data, offset, 4) * _P1
        h = _rotl(h, 23) * _P2 + _P3
        offset += 4
    while offset < end:
        h ^= np.uint64(data[offset]) * _P5
        h = _rotl(h, 11) * _P1
        offset += 1
    return _fmix(h)


@numba.njit(cache=_CACHE, nogil=True)
def _xxh64_int(value, seed):
    h = seed + _P5 + np.uint64(4)
    h ^= (value & np.uint64(0xFFFFFFFF)) * _P1
    return _fmix(_rotl(h, 23) * _P2 + _P3)


@numba.njit(cache=_CACHE, nogil=True)
def _xxh64_long(value, seed):
    h = seed + _P5 + np.uint64(8)
    h ^= _rotl(value * _P2, 31) * _P1
    return _fmix(_rotl(h, 27) * _P1 + _P4)


@numba.njit(cache=_CACHE, nogil=True)
def _xxhash64_strings(data, offsets, seed_hash):
    n = offsets.shape[0] - 1
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        out[i] = _xxh64_bytes(data, np.int64(offsets[i]), np.int64(offsets[i + 1]), seed_hash)
    return out


def spark_xxhash64_strings(data: np.ndarray, offsets: np.ndarray, seed: int) -> np.ndarray:
    """Spark's xxhash64(lit(seed), s) (uint64 bits) of each string s: UTF-8 bytes `data` (uint8),
    string i = data[offsets[i]:offsets[i + 1]]. lit(seed) is an int when it fits 32 bits, else a long."""
    default = np.uint64(42)
    if -(2**31) <= seed < 2**31:
        seed_hash = _xxh64_int(np.uint64(seed & 0xFFFFFFFF), default)
    else:
        seed_hash = _xxh64_long(np.uint64(seed & 0xFFFFFFFFFFFFFFFF), default)
    return _xxhash64_strings(data, offsets.astype(np.int64, copy=False), np.uint64(seed_hash))


@numba.njit(cache=_CACHE, nogil=True)
def _play_matches(x, rows, lo, hi, slots, starts, ends, dims, weights):
    n = rows.shape[0]
    winners = np.empty(n, dtype=np.int64)
    for m in range(n):
        s = slots[m]
        score = _match_weighted(x[rows[m]], weights[starts[s] : ends[s]], dims[starts[s] : ends[s]])
        winners[m] = lo[m] if score >= 0.0 else hi[m]
    return winners


def play_matches(x, rows, lo, hi, slots, starts, ends, dims, weights):
    """The winner of each match m: item x[rows[m]], lo[m] vs hi[m] (lo < hi, the lower on a tie),
    on the pair held at slot slots[m] of a core/pair_cache.PairCache: the sums of _winner with
    stored weights, in the same order (so the same answers as the stored masks)."""
    return _play_matches(x, rows, lo, hi, slots, starts, ends, dims, weights)


@numba.njit(cache=_CACHE, nogil=True)
def _pair_ratios(mean, variance, a, b):
    n = a.shape[0]
    dim = mean.shape[1]
    out = np.empty((n, dim), dtype=np.float64)
    for p in range(n):
        ca = a[p]
        cb = b[p]
        for d in range(dim):
            va = variance[ca, d]
            vb = variance[cb, d]
            diff = mean[ca, d] - mean[cb, d]
            xvar = 0.5 * (va + vb) + 0.5 * diff * diff
            sd = np.sqrt(va) * np.sqrt(vb)
            if sd > 0:
                out[p, d] = np.sqrt(xvar / sd)
            elif xvar > 0:
                out[p, d] = np.inf
            else:
                out[p, d] = 1.0
    return out


def pair_ratios(mean, variance, a, b):
    """(len(a), D) crossvar.cross_ratio of the class pairs (a[i], b[i]) from the classes' means and
    variances (float64, C-contiguous): the same operations in the same order per element, so the
    same bits, without the (B, D) gathers and temporaries (4x faster: core/pair_cache.py makes
    tens of thousands of pairs per batch). NaN in the statistics gives NaN (the caller refuses it)."""
    return _pair_ratios(mean, variance, np.asarray(a, np.int64), np.asarray(b, np.int64))
