"""The fit loops' shared vocabulary: what a learning method's fit loop is given and gives.

A fit loop is a function (passes, context) -> Fit. It reads the items only through `Passes` (one
pass = the sum of a labeller's LabelStats over every valid item; the driver's fixed sample), which
the Spark layer implements with one distributed job per pass (spark/passes.py) and the tests and
scripts/study.py over in-memory arrays; so every fit loop stays pure numpy. The loops themselves are
core/em.py (centroid, transductive, labelshift) and core/rounds.py (cotrain, selftrain); the registry
that names them is core/methods.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pairspark.core.scorers import LabelStats, Scorer
from pairspark.core.stats import ClassMoments


# (unit rows per view, base cosines per view, verified class index per row or -1) -> LabelStats per view
Labeller = Callable[[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray], dict[str, LabelStats]]
# a verified item (--labels) weighs as this many pseudo-labelled ones in every learning method's
# statistics (measured 1, 5 and 20, and weights set as a share of the pseudo-labelled mass:
# docs/METHOD.md, "Verified labels")
VERIFIED_WEIGHT = 5.0


class Passes(Protocol):
    """What a fit loop may ask of the items (all of them valid rows)."""

    def stats(self, labeller: Labeller) -> dict[str, LabelStats]:
        """One pass: the sum over every item of labeller's LabelStats, per view."""

    def sample(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Unit rows per view of a fixed random subset of the items plus every verified item (the
        same on every call), and each row's verified class index (-1 for none)."""


def training_stats(x: np.ndarray, labels: np.ndarray, keep: np.ndarray | None, verified: np.ndarray, n_classes: int,
                   with_scatter: bool = False) -> LabelStats:
    """One view's training statistics: the kept pseudo-labelled rows, plus every verified row
    with its verified class at VERIFIED_WEIGHT (a verified row is never pseudo-labelled)."""
    is_verified = verified >= 0
    keep = np.ones(len(labels), bool) if keep is None else keep
    stats = LabelStats.from_labels(x, labels, n_classes, keep & ~is_verified, with_scatter)
    if is_verified.any():
        stats = stats + LabelStats.from_labels(x, verified, n_classes, is_verified, with_scatter).scaled(VERIFIED_WEIGHT)
    return stats


@dataclass(frozen=True)
class FitContext:
    """Everything a fit loop starts from, besides the passes."""

    views: list[str]
    class_vectors: dict[str, np.ndarray]  # (C, D) unit prompt vectors per view
    moments: dict[str, ClassMoments]  # confident base subset per view; empty unless Method.needs_moments
    margins: dict[str, float]  # base margin threshold of the confident subset per view
    valid_items: int  # at least the number of valid items; equal when the sample is every valid item
    confident_share: float  # the share of least confident items a quantile min_margin drops


@dataclass(frozen=True)
class Fit:
    """What a method's fit loop gives: its scorer per view, facts for meta.json (at least
    {"passes": passes over the items}), and, for a discriminant trained on the driver's sample, that
    sample scored by discriminants fitted without each row's fold (core/held_out.held_out_scores),
    per view: the confidence is calibrated on those (core/confidence.calibrate). A view missing from
    held_out is scored by its fitted scorer (a method whose fit reproduces no label of its own)."""

    scorers: dict[str, Scorer]
    facts: dict
    held_out: dict[str, np.ndarray] = field(default_factory=dict)


def mean_stats(stats: list[LabelStats]) -> LabelStats:
    """The mean of several statistics (the rounds of a cycle: core/rounds.train_until_repeat)."""
    k = float(len(stats))
    return LabelStats(sum(s.weight for s in stats) / k, sum(s.sums for s in stats) / k, sum(s.sumsq for s in stats) / k,
                      sum(s.scatter for s in stats) / k)


def sample_cosines(names: list[str], sample: dict[str, np.ndarray], ctx: FitContext) -> dict[str, np.ndarray]:
    """Per view, the cosines of the driver's sample rows to the class prompts (float64)."""
    return {n: sample[n] @ np.asarray(ctx.class_vectors[n], np.float64).T for n in names}
