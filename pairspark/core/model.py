"""A fitted view: class vectors, statistics and pair masks, and how it classifies a batch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pairspark.core.cosine import base_assign, normalize_rows
from pairspark.core.masks import MaskSettings, class_pairs, pair_masks
from pairspark.core.stats import ClassMoments
from pairspark.core.tournament import pair_weights, play_tournament

METHODS = ("base", "pairwise")


@dataclass
class ViewModel:
    """Everything one view needs at classification time, all small (classes x dims)."""

    name: str
    column: str
    class_ids: list[str]
    class_vectors: np.ndarray  # (C, D) unit rows, float32
    moments: ClassMoments  # over the confident subset
    masks: list[np.ndarray]  # one sorted dims array per pair of class_pairs(C)
    min_margin_used: float = 0.0
    _weights: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def dim(self) -> int:
        return int(self.class_vectors.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.class_ids)

    @property
    def weights(self) -> np.ndarray:
        if self._weights is None:
            self._weights = pair_weights(self.class_vectors, self.masks).astype(np.float64)
        return self._weights

    def pairs(self) -> np.ndarray:
        return class_pairs(self.n_classes)

    def classify(self, x: np.ndarray, item_keys: np.ndarray, methods: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Class indices per method, plus the base cosine, for a batch x (n, D) of raw vectors.

        float64 on purpose: BLAS float32 results for one row change in the last bits with the
        batch it is computed in (measured: thousands of differing entries), so answers and cosines
        would depend on partitioning. In float64 those differences (~1e-16) vanish when the cosine
        is rounded to float32 and can only flip an exact tie.
        """
        x_unit = normalize_rows(np.asarray(x, dtype=np.float64))
        base = base_assign(x_unit, self.class_vectors.astype(np.float64))
        out: dict[str, np.ndarray] = {"base": base.best, "base_cosine": base.best_cosine.astype(np.float32)}
        if "pairwise" in methods:
            out["pairwise"] = play_tournament(x_unit, self.weights, item_keys, self.n_classes)
        return out


def fit_view(
    name: str,
    column: str,
    class_ids: list[str],
    class_unit: np.ndarray,
    moments: ClassMoments,
    mask_settings: MaskSettings,
    min_margin_used: float = 0.0,
) -> ViewModel:
    return ViewModel(
        name=name,
        column=column,
        class_ids=list(class_ids),
        class_vectors=np.asarray(class_unit, dtype=np.float32),
        moments=moments,
        masks=pair_masks(moments, mask_settings),
        min_margin_used=min_margin_used,
    )
