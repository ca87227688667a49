"""The method registry: every classification method is one `Method` entry here.

An entry says how the method predicts a batch of one view (class indices, and per-class scores
where the method has them: the confidence work builds on those) and, for the methods that learn
from the items, how it fits: a loop over full passes through the items, written against the
`Passes` protocol (one pass = the sum of a labeller's LabelStats over every valid item). The
Spark layer implements `Passes` with one distributed job per pass (spark/passes.py); the tests
implement it over an in-memory array. So this module stays pure numpy, and adding a method is
one entry plus its tests: nothing else lists the methods.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from pairspark.core.cosine import BaseAssignment
from pairspark.core.scorers import (
    LabelStats,
    Scorer,
    centroid_scorer,
    cotrain_targets,
    lda_scorer,
    margin_threshold,
    ovr_predict,
    softmax,
    top_margin,
    transductive_initial,
    transductive_scorer,
)
from pairspark.core.stats import ClassMoments
from pairspark.core.tournament import play_round_robin, play_tournament
from pairspark.errors import UsageError

if TYPE_CHECKING:
    from pairspark.core.model import ViewModel

log = logging.getLogger("pairspark")

CENTROID_ITERATIONS = 3
TRANSDUCTIVE_ITERATIONS = 10
# cotrain's rounds run on the driver's sample until its training targets repeat (a fixed point or
# a cycle); this cap is only a guard (the shared sets repeat after 21 and 46 rounds)
COTRAIN_MAX_ROUNDS = 200


@dataclass(frozen=True)
class Batch:
    """One view of a batch of valid items, as every method sees it."""

    x_unit: np.ndarray  # (n, D) float64 unit rows
    base: BaseAssignment  # cosines to the prompts and their argmax
    keys: np.ndarray  # (n,) uint64 bracket keys (xxhash64 of seed and item_id)
    top: np.ndarray | None  # (n, k) candidate classes when the bracket is limited, else None


# (labels (n,), per-class scores (n, C) or None for methods that only name a winner)
Prediction = tuple[np.ndarray, "np.ndarray | None"]
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
    moments: dict[str, ClassMoments]  # confident base subset per view
    margins: dict[str, float]  # base margin threshold of the confident subset per view
    valid_items: int
    confident_share: float  # the share of least confident items a quantile min_margin drops


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    predict: Callable[[ViewModel, Batch], Prediction]
    # iterative methods: (passes, context) -> (scorer per view, facts: at least {"passes": passes
    # over the items}); None: nothing to fit beyond the confident statistics and masks every model has
    fit: Callable[[Passes, FitContext], tuple[dict[str, Scorer], dict]] | None = None
    min_views: int = 1

    @property
    def iterative(self) -> bool:
        return self.fit is not None


def _scored(scorer: Scorer, batch: Batch) -> Prediction:
    scores = scorer.scores(batch.x_unit, batch.base.cosines)
    labels = np.argmax(scores, axis=1) if len(scores) else np.zeros(0, np.int64)
    return labels, scores


def _fitted(name: str) -> Callable[[ViewModel, Batch], Prediction]:
    return lambda model, batch: _scored(model.scorers[name], batch)


def fit_centroid(passes: Passes, ctx: FitContext) -> tuple[dict[str, Scorer], dict]:
    """Iteration 1 from the confident base subset's means, then re-assign every item by cosine to
    the new centroids and re-average, CENTROID_ITERATIONS in all."""
    scorers = {n: centroid_scorer(LabelStats(ctx.moments[n].count.astype(float), ctx.moments[n].sums,
                                             np.zeros_like(ctx.moments[n].sums), np.zeros((0, 0))), ctx.class_vectors[n])
               for n in ctx.views}
    for _ in range(CENTROID_ITERATIONS - 1):
        current = dict(scorers)

        def labeller(xs, cosines, verified, current=current):
            return {n: training_stats(x, current[n].predict(x, cosines[n]), None, verified, len(current[n].bias))
                    for n, x in xs.items()}

        stats = passes.stats(labeller)
        scorers = {n: centroid_scorer(stats[n], ctx.class_vectors[n]) for n in ctx.views}
    return scorers, {"passes": CENTROID_ITERATIONS - 1}


def fit_transductive(passes: Passes, ctx: FitContext) -> tuple[dict[str, Scorer], dict]:
    """EM: z from the text prior, then TRANSDUCTIVE_ITERATIONS (M-step, E-step) rounds."""
    current: dict[str, Scorer] | None = None
    for _ in range(TRANSDUCTIVE_ITERATIONS):

        def labeller(xs, cosines, verified, current=current):
            out = {}
            for n, x in xs.items():
                z = transductive_initial(cosines[n]) if current is None else softmax(current[n].scores(x, cosines[n]))
                rows = np.flatnonzero(verified >= 0)
                if len(rows):  # a verified row: all its weight on its class
                    z = z.copy()
                    z[rows] = 0.0
                    z[rows, verified[rows]] = VERIFIED_WEIGHT
                out[n] = LabelStats.from_weights(x, z)
            return out

        stats = passes.stats(labeller)
        current = {n: transductive_scorer(stats[n]) for n in ctx.views}
    return current, {"passes": TRANSDUCTIVE_ITERATIONS}


def cotrain_round(names: list[str], xs: dict[str, np.ndarray], cosines: dict[str, np.ndarray],
                  current: dict[str, Scorer] | None, thresholds: list[float],
                  verified: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """One co-training round's (training label, keep mask) per view: from the base cosines in round
    1 (current None), else from the current discriminants (core/scorers.cotrain_targets); a
    verified row is trained on its verified class in both views."""
    scores = [cosines[n] if current is None else current[n].scores(xs[n], cosines[n]) for n in names]
    targets = cotrain_targets([s.argmax(axis=1) for s in scores], [top_margin(s) for s in scores], thresholds)
    if verified is None or not (verified >= 0).any():
        return targets
    fixed = verified >= 0
    return [(np.where(fixed, verified, label), keep | fixed) for label, keep in targets]


def _mean_stats(stats: list[LabelStats]) -> LabelStats:
    k = float(len(stats))
    return LabelStats(sum(s.weight for s in stats) / k, sum(s.sums for s in stats) / k, sum(s.sumsq for s in stats) / k,
                      sum(s.scatter for s in stats) / k)


def fit_cotrain(passes: Passes, ctx: FitContext) -> tuple[dict[str, Scorer], dict]:
    """Co-training of two per-view discriminants (core/scorers.py), run to convergence.

    The rounds run on the driver's fixed sample (every valid item up to COTRAIN_SAMPLE): round 1
    labels by base cosine with the fit's base margin thresholds, each later round with the previous
    round's discriminants, the confidence thresholds being the confident_share quantile of their
    margins. The round map is deterministic on a finite set of training targets, so the targets
    must repeat: at the first repeat (a fixed point, period 1, or a cycle, period p) the loop stops
    and the discriminants are fitted on the mean of the cycle's statistics, which does not depend
    on where the cycle was entered. Nothing depends on a pass cap. When the sample is not every
    item, one pass over all items then fits the final discriminants on the targets the converged
    ones give (thresholds from the sample)."""
    names = list(ctx.views)
    sample, sample_verified = passes.sample()
    n_classes = {n: len(ctx.class_vectors[n]) for n in names}
    sample_cos = {n: sample[n] @ np.asarray(ctx.class_vectors[n], np.float64).T for n in names}
    current: dict[str, Scorer] | None = None
    thresholds = [ctx.margins[n] for n in names]
    seen: dict[bytes, int] = {}
    history: list[dict[str, LabelStats]] = []
    cycle: list[dict[str, LabelStats]] | None = None
    for rounds in range(1, COTRAIN_MAX_ROUNDS + 1):
        targets = cotrain_round(names, sample, sample_cos, current, thresholds, sample_verified)
        state = hashlib.sha256(b"".join(np.where(keep, label, -1).astype(np.int64).tobytes() for label, keep in targets)).digest()
        if state in seen:
            cycle = history[seen[state]:]
            break
        stats = {n: training_stats(sample[n], label, keep, sample_verified, n_classes[n], with_scatter=True)
                 for n, (label, keep) in zip(names, targets)}
        if min(stats[n].weight.sum() for n in names) == 0:
            raise UsageError("cotrain: no item to learn from (the views agree on none and neither is confident)")
        seen[state] = len(history)
        history.append(stats)
        current = {n: lda_scorer(stats[n]) for n in names}
        thresholds = [margin_threshold(top_margin(current[n].scores(sample[n], sample_cos[n])), ctx.confident_share)
                      for n in names]
    converged = cycle is not None
    cycle = cycle if converged else history[-1:]
    log.info("cotrain: %s after %d rounds on %d items%s", "targets repeat" if converged else "NOT converged",
             len(history), len(sample[names[0]]), f" (period {len(cycle)})" if converged else "")
    model = {n: lda_scorer(_mean_stats([c[n] for c in cycle])) for n in names}
    facts = {"passes": 0, "rounds": len(history), "converged": converged, "period": len(cycle) if converged else None,
             "sample_items": int(len(sample[names[0]]))}
    if len(sample[names[0]]) >= ctx.valid_items:  # the sample is every item
        return model, facts
    thresholds = [margin_threshold(top_margin(model[n].scores(sample[n], sample_cos[n])), ctx.confident_share) for n in names]

    def labeller(xs, cosines, verified):
        return {n: training_stats(xs[n], label, keep, verified, cosines[n].shape[1], with_scatter=True)
                for n, (label, keep) in zip(names, cotrain_round(names, xs, cosines, model, thresholds, verified))}

    stats = passes.stats(labeller)
    return {n: lda_scorer(stats[n]) for n in names}, {**facts, "passes": 1}


def _entry(*methods: Method) -> dict[str, Method]:
    return {m.name: m for m in methods}


REGISTRY: dict[str, Method] = _entry(
    Method("base", "argmax cosine to the class prompts (METHOD.md step 1)",
           lambda model, batch: (batch.base.best, batch.base.cosines)),
    Method("pairwise", "the seed's tournament: each match on the dims that separate that pair (METHOD.md)",
           lambda model, batch: (play_tournament(batch.x_unit, model.vectors64, model.masks, model.coefficients,
                                                 batch.keys, batch.top, model.pair_weights), None)),
    Method("ovr", "cosine on each class's one-vs-rest dims",
           lambda model, batch: (ovr_predict(batch.x_unit, model.vectors64, model.ovr_keep), None)),
    Method("roundrobin", "every pair's match played; most wins, ties by base cosine",
           lambda model, batch: (play_round_robin(batch.x_unit, model.vectors64, model.masks, model.coefficients,
                                                  batch.base.cosines, batch.top, model.pair_weights), None)),
    Method("centroid", "prototypes re-estimated from the items each class wins", _fitted("centroid"), fit_centroid),
    Method("gnb", "Gaussian naive Bayes on the confident subset", lambda model, batch: _scored(model.gnb, batch)),
    Method("transductive", "TransCLIP-style Gaussian EM with the prompt prior", _fitted("transductive"),
           fit_transductive),
    Method("cotrain", "two views teach each other a shrunk-covariance discriminant (the default's answer)",
           _fitted("cotrain"), fit_cotrain, min_views=2),
)
METHODS = tuple(REGISTRY)
# NAME_class comes from the first of these that ran (docs/RESULTS.md says why cotrain leads)
PRIMARY_ORDER = ("cotrain", "pairwise")


def primary_method(methods) -> str:
    """The method whose answer becomes NAME_class."""
    return next((m for m in PRIMARY_ORDER if m in methods), methods[0])


def default_methods(n_views: int) -> tuple[str, ...]:
    return tuple(m for m in ("base", "pairwise", "cotrain") if REGISTRY[m].min_views <= n_views)


def iterative(methods) -> tuple[str, ...]:
    return tuple(m for m in methods if REGISTRY[m].iterative)
