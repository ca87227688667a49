import numpy as np
import pytest

from pairspark.core.crossvar import cross_ratio, cross_variance


def brute_cross_variance(a, b):
    """1/(2|A||B|) sum_i sum_k (a_i - b_k)^2, per dimension, by broadcasting every cross pair."""
    diff = a[:, None, :] - b[None, :, :]
    return (diff**2).sum(axis=(0, 1)) / (2 * len(a) * len(b))


def moments(a):
    return a.mean(axis=0), a.var(axis=0)


@pytest.mark.parametrize("seed", range(5))
def test_cross_variance_equals_half_mean_squared_cross_difference(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(rng.normal(), rng.uniform(0.1, 2), size=(rng.integers(1, 40), 6))
    b = rng.normal(rng.normal(), rng.uniform(0.1, 2), size=(rng.integers(1, 40), 6))
    np.testing.assert_allclose(cross_variance(*moments(a), *moments(b)), brute_cross_variance(a, b), rtol=1e-10)


def test_cross_variance_of_a_distribution_with_itself_is_its_variance():
    a = np.random.default_rng(0).normal(size=(30, 5))
    np.testing.assert_allclose(cross_variance(*moments(a), *moments(a)), a.var(axis=0), rtol=1e-12)
    np.testing.assert_allclose(brute_cross_variance(a, a), a.var(axis=0), rtol=1e-12)


def test_cross_ratio_is_at_least_one_and_one_for_equal_moments():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 50)), rng.normal(0.5, 2.0, size=(40, 50))
    r = cross_ratio(*moments(a), *moments(b))
    assert (r >= 1 - 1e-12).all()
    np.testing.assert_allclose(cross_ratio(*moments(a), *moments(a)), 1.0)
    expected = np.sqrt(brute_cross_variance(a, b) / (a.std(axis=0) * b.std(axis=0)))
    np.testing.assert_allclose(r, expected, rtol=1e-10)


def test_zero_variance_dimensions_give_inf_when_separated_and_one_when_identical():
    mean_a, var_a = np.array([0.0, 1.0, 2.0, 0.5]), np.array([0.0, 0.0, 1.0, 0.0])
    mean_b, var_b = np.array([0.0, 2.0, 2.0, 0.5]), np.array([0.0, 1.0, 0.0, 0.0])
    r = cross_ratio(mean_a, var_a, mean_b, var_b)
    assert r[0] == 1.0  # both constant at the same value: no separation
    assert np.isinf(r[1]) and np.isinf(r[2])  # one constant, the other spread: separates
    assert r[3] == 1.0
    assert not np.isnan(r).any()


def test_non_finite_statistics_raise_instead_of_emitting_nan():
    with pytest.raises(ValueError, match="NaN"):
        cross_ratio(np.array([np.nan]), np.array([1.0]), np.array([0.0]), np.array([1.0]))
