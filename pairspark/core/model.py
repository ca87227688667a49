"""A fitted view: class vectors, statistics, pair masks, fitted scorers and temperatures.

Pair masks are stored up to STORED_PAIRS_MAX pairs (256 classes); above, the model grows with
C x D only: a pair's mask is made from the two classes' statistics where an item meets that pair
(core/pair_cache.py), the same bits as the stored ones.

Fitted data only, so that every layer above can hold one without importing how it is used: the
methods that classify with it are registry entries (core/methods.py), a batch is classified in
core/classify.py and the temperatures are fitted in core/confidence.py. What a method derives
from the fitted data (pair coefficients, one-vs-rest masks, ...) is kept here by name
(`derived`), built by the method's own code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pairspark.core.masks import MaskSettings, PairMasks, class_pairs, pair_masks
from pairspark.core.scorers import Scorer
from pairspark.core.stats import ClassMoments
from pairspark.core.tree import Tree

# Up to this many pairs (256 classes: 32,640) the masks are built at fit and stored with the model
# (fastest to classify, a few MB); above, they are made on demand (ViewModel.on_demand). At 1,000
# classes the stored masks were 819 MB in Arrow and 20 s to load; at 10,000 they cannot be built.
STORED_PAIRS_MAX = 256 * 255 // 2


def stores_pairs(n_classes: int) -> bool:
    """Whether a model of n_classes classes stores its pair masks."""
    return n_classes * (n_classes - 1) // 2 <= STORED_PAIRS_MAX


@dataclass
class ViewModel:
    """Everything one view needs at classification time, all small (classes x dims)."""

    name: str
    column: str
    class_ids: list[str]
    class_vectors: np.ndarray  # (C, D) unit rows, float32
    moments: ClassMoments  # over the confident subset
    masks: PairMasks | None  # the dims of every pair of class_pairs(C); None: made on demand
    min_margin_used: float = 0.0
    mask_settings: MaskSettings = field(default_factory=MaskSettings)
    scorers: dict[str, Scorer] = field(default_factory=dict)  # fitted learning methods (core/methods.py)
    # per method with per-class scores, the temperature of its probabilities (core/calibration.py);
    # a method missing here (a model from before calibration) gets 1.0
    calibration: dict[str, float] = field(default_factory=dict)
    # the classes' taxonomy (core/tree.py), whose leaves class_ids are; None for a flat class list
    tree: Tree | None = None
    # `derived`'s memos: shipped with the view, and kept to the process that built them
    _derived: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _local: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_local"] = {}
        return state

    def derived(self, key: str, build: Callable[[ViewModel], Any], ship: bool = True) -> Any:
        """build(self), memoised under `key`: what a method computes from the fitted data once
        rather than per batch (core/methods.py, a Method's `prepare`). Built on the driver, it
        ships with the view instead of being rebuilt in every task; ship=False keeps it out of
        the pickle, for what is cheaper to rebuild where it is used than to ship."""
        memo = self._derived if ship else self._local
        if key not in memo:
            memo[key] = build(self)
        return memo[key]

    @property
    def dim(self) -> int:
        return int(self.class_vectors.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.class_ids)

    @property
    def vectors64(self) -> np.ndarray:
        """The class vectors in float64, as every method computes (core/classify.py says why)."""
        return self.derived("vectors64", lambda v: v.class_vectors.astype(np.float64))

    @property
    def on_demand(self) -> bool:
        """Whether the pair masks are made where they are needed (core/pair_cache.py)."""
        return self.masks is None

    def pairs(self) -> np.ndarray:
        return class_pairs(self.n_classes)


def fit_view(
    name: str,
    column: str,
    class_ids: list[str],
    class_unit: np.ndarray,
    moments: ClassMoments,
    mask_settings: MaskSettings,
    min_margin_used: float = 0.0,
    scorers: dict[str, Scorer] | None = None,
    tree: Tree | None = None,
) -> ViewModel:
    """A view fitted on its confident statistics. A view that makes its masks on demand keeps its
    statistics as the model directory gives them back (ClassMoments.stored), and above 256 classes
    its scorers too (float32: the compact directory, Scorer.stored), so that a reloaded model
    answers with the bits of this one."""
    compact = not stores_pairs(len(class_ids))
    stored = not compact and tree is None  # a tree's matches use sibling masks (TreePairCache)
    return ViewModel(
        name=name,
        column=column,
        class_ids=list(class_ids),
        class_vectors=np.asarray(class_unit, dtype=np.float32),
        moments=moments if stored else moments.stored(compact),
        masks=pair_masks(moments, mask_settings) if stored else None,
        min_margin_used=min_margin_used,
        mask_settings=mask_settings,
        scorers={m: (s.stored() if compact else s) for m, s in (scorers or {}).items()},
        tree=tree,
    )
