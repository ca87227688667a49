"""Cross-variance and cross ratio between two classes, per dimension (METHOD.md step 4)."""

from __future__ import annotations

import numpy as np


def cross_variance(mean_a, var_a, mean_b, var_b) -> np.ndarray:
    """xvar(A, B) = 1/(2|A||B|) sum_i sum_k (a_i - b_k)^2 from moments alone.

    Written as (v_A + v_B)/2 + (m_A - m_B)^2/2, which equals (e_A + e_B)/2 - m_A m_B but has no
    cancellation between large second moments.
    """
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    diff = mean_a - mean_b
    return 0.5 * (np.asarray(var_a, np.float64) + np.asarray(var_b, np.float64)) + 0.5 * diff * diff


def cross_ratio(mean_a, var_a, mean_b, var_b) -> np.ndarray:
    """r(A, B) = sqrt(xvar / (sd_A sd_B)) >= 1, per dimension, never NaN.

    Zero variance (sd_A * sd_B == 0), documented behaviour:
      * xvar > 0: the dimension separates the classes perfectly, r = +inf (kept first);
      * xvar == 0: both classes are the same constant, r = 1 (no separation).
    """
    xvar = cross_variance(mean_a, var_a, mean_b, var_b)
    sd_product = np.sqrt(np.asarray(var_a, np.float64)) * np.sqrt(np.asarray(var_b, np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.sqrt(xvar / sd_product)
    ratio = np.where(sd_product > 0, ratio, np.where(xvar > 0, np.inf, 1.0))
    if np.isnan(ratio).any():
        raise ValueError("cross_ratio produced NaN: the statistics hold non-finite values")
    return ratio
