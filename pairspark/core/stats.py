"""Per-class sufficient statistics (METHOD.md step 3), mergeable across partitions.

Kept as (count, mean, m2) and merged with Chan's parallel formula rather than as raw
(count, sum, sum of squares): the raw form cancels catastrophically when values sit far
from zero (e.g. 1e3 +- 1e-3), the merged form does not. Sums and sums of squares are
derived on output, since that is the published artifact format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pairspark.core import kernels


@dataclass(frozen=True)
class ClassMoments:
    """count (C,), mean (C, D) and m2 (C, D) = sum of squared deviations from the mean."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, n_classes: int, dim: int) -> ClassMoments:
        return cls(
            np.zeros(n_classes, dtype=np.int64),
            np.zeros((n_classes, dim), dtype=np.float64),
            np.zeros((n_classes, dim), dtype=np.float64),
        )

    @classmethod
    def from_batch(cls, x: np.ndarray, labels: np.ndarray, n_classes: int) -> ClassMoments:
        """Moments of the rows of x grouped by labels (ints in [0, n_classes)), two-pass, float64."""
        x = np.asarray(x, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.int64)
        if x.ndim != 2 or labels.shape != (x.shape[0],):
            raise ValueError(f"x must be (n, d) and labels (n,), got {x.shape} and {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"labels must lie in [0, {n_classes})")
        count, mean, m2 = kernels.class_moments(np.ascontiguousarray(x), labels, n_classes)
        return cls(count, mean, m2)

    @classmethod
    def from_sums(cls, count: np.ndarray, sums: np.ndarray, m2: np.ndarray) -> ClassMoments:
        """The moments a model directory stores (count, sum, m2): mean = sum / count (0 if empty)."""
        count = np.asarray(count, np.int64)
        sums = np.asarray(sums, np.float64)
        mean = np.where(count[:, None] > 0, sums / np.maximum(count, 1)[:, None], 0.0)
        return cls(count, mean, np.asarray(m2, np.float64))

    def stored(self, compact: bool = False) -> ClassMoments:
        """These moments as a model directory gives them back: from_sums of the sums and m2, in
        float32 for a compact directory (spark/model_io.py: above 256 classes, where C x D is the
        model's bulk). A view whose masks are made from its moments fits with these values, so
        that the masks made from a reloaded model are the bits made from the fitted one."""
        if compact:
            return ClassMoments.from_sums(self.count, self.sums.astype(np.float32), self.m2.astype(np.float32))
        return ClassMoments.from_sums(self.count, self.sums, self.m2)

    def merge(self, other: ClassMoments) -> ClassMoments:
        """Chan et al. pairwise update; exact for counts, stable for means and m2."""
        n_a, n_b = self.count[:, None].astype(np.float64), other.count[:, None].astype(np.float64)
        n = n_a + n_b
        safe_n = np.where(n > 0, n, 1.0)
        delta = other.mean - self.mean
        mean = self.mean + delta * (n_b / safe_n)
        m2 = self.m2 + other.m2 + delta * delta * (n_a * n_b / safe_n)
        return ClassMoments(self.count + other.count, mean, m2)

    @property
    def n_classes(self) -> int:
        return int(self.count.shape[0])

    @property
    def dim(self) -> int:
        return int(self.mean.shape[1])

    @property
    def variance(self) -> np.ndarray:
        """Population variance per class and dimension; 0 for an empty class."""
        safe = np.maximum(self.count, 1)[:, None]
        return np.maximum(self.m2 / safe, 0.0)

    @property
    def sums(self) -> np.ndarray:
        return self.mean * self.count[:, None]

    @property
    def sumsq(self) -> np.ndarray:
        return self.m2 + self.count[:, None] * self.mean * self.mean


def merge_all(parts: list[ClassMoments]) -> ClassMoments:
    if not parts:
        raise ValueError("merge_all needs at least one ClassMoments")
    total = parts[0]
    for part in parts[1:]:
        total = total.merge(part)
    return total
