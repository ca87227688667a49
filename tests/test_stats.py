import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pairspark.core.stats import ClassMoments, merge_all


def reference_moments(x, labels, n_classes):
    """Two-pass float64 per class, written independently of the kernel."""
    count = np.zeros(n_classes, np.int64)
    mean = np.zeros((n_classes, x.shape[1]))
    var = np.zeros((n_classes, x.shape[1]))
    for c in range(n_classes):
        rows = x[labels == c].astype(np.float64)
        count[c] = len(rows)
        if len(rows):
            mean[c] = rows.mean(axis=0)
            var[c] = ((rows - mean[c]) ** 2).mean(axis=0)
    return count, mean, var


def test_batch_moments_match_two_pass_reference_with_an_empty_class():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 7))
    labels = rng.choice([0, 1, 3], size=500)  # class 2 empty
    m = ClassMoments.from_batch(x, labels, 4)
    count, mean, var = reference_moments(x, labels, 4)
    np.testing.assert_array_equal(m.count, count)
    np.testing.assert_allclose(m.mean, mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.variance, var, rtol=1e-12, atol=1e-14)
    assert m.count[2] == 0 and not m.mean[2].any() and not m.variance[2].any()
    np.testing.assert_allclose(m.sums[1], x[labels == 1].sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(m.sumsq[3], (x[labels == 3] ** 2).sum(axis=0), rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 60),
    cuts=st.lists(st.integers(0, 60), max_size=6),
    seed=st.integers(0, 2**31),
)
def test_merging_partials_in_any_grouping_equals_computing_at_once(n, cuts, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=3.0, size=(n, 3))
    labels = rng.integers(0, 4, n)
    bounds = sorted({0, n, *[min(c, n) for c in cuts]})
    parts = [ClassMoments.from_batch(x[a:b], labels[a:b], 4) for a, b in zip(bounds, bounds[1:])] or [ClassMoments.empty(4, 3)]
    # merge in a shuffled order and as a tree, both must equal the direct computation
    order = rng.permutation(len(parts))
    linear = merge_all([parts[i] for i in order])
    tree = parts
    while len(tree) > 1:
        tree = [tree[i].merge(tree[i + 1]) if i + 1 < len(tree) else tree[i] for i in range(0, len(tree), 2)]
    direct = ClassMoments.from_batch(x, labels, 4)
    for merged in (linear, tree[0]):
        np.testing.assert_array_equal(merged.count, direct.count)
        np.testing.assert_allclose(merged.mean, direct.mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(merged.variance, direct.variance, rtol=1e-9, atol=1e-12)


def test_variance_survives_a_large_offset_where_raw_sums_of_squares_cancel():
    rng = np.random.default_rng(7)
    x = 1e3 + 1e-3 * rng.uniform(-1, 1, size=(1_000_000, 2))
    labels = np.zeros(len(x), np.int64)
    # uneven partitions, as Spark would hand them over
    cuts = np.unique(np.concatenate([[0, len(x)], rng.integers(0, len(x), 97)]))
    parts = [ClassMoments.from_batch(x[a:b], labels[a:b], 1) for a, b in zip(cuts[:-1], cuts[1:])]
    merged = merge_all(parts)
    reference = ((x - x.mean(axis=0)) ** 2).mean(axis=0)
    np.testing.assert_allclose(merged.variance[0], reference, rtol=1e-6)
    # the naive route, for contrast: sum of squares minus n * mean^2 loses the answer
    naive = (x**2).sum(axis=0) / len(x) - x.mean(axis=0) ** 2
    assert np.max(np.abs(naive - reference) / reference) > 1e-6


def test_batch_moments_equal_a_per_class_numpy_reference():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(500, 7)) * rng.uniform(0.1, 5, size=7) + 3
    labels = rng.integers(0, 6, 500)
    labels[labels == 4] = 5  # class 4 empty
    m = ClassMoments.from_batch(x.astype(np.float32), labels, 6)
    for c in range(6):
        rows = x.astype(np.float32).astype(np.float64)[labels == c]
        assert m.count[c] == len(rows)
        if len(rows):
            np.testing.assert_allclose(m.mean[c], rows.mean(axis=0), rtol=1e-12)
            np.testing.assert_allclose(m.variance[c], rows.var(axis=0), rtol=1e-10)
        else:
            assert not m.mean[c].any() and not m.m2[c].any()
    with pytest.raises(ValueError, match="labels must lie"):
        ClassMoments.from_batch(x, np.full(500, 6), 6)
