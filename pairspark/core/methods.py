"""The method registry: every classification method is one `Method` entry here.

An entry says how the method predicts a batch of one view (class indices, and per-class scores
where the method has them: the confidence work builds on those) and, for the methods that learn
from the items, which fit loop fits it. The predictors live here; the fit loops live in the modules
below, each written against the `Passes` protocol (one pass = the sum of a labeller's LabelStats over
every valid item), so that they stay pure numpy (the Spark layer implements `Passes` with one
distributed job per pass, spark/passes.py; the tests over an in-memory array):

  core/fitting.py   the fit loops' vocabulary: Passes, FitContext, Fit, training_stats, VERIFIED_WEIGHT
  core/em.py        centroid, transductive and labelshift (re-estimated from full passes)
  core/rounds.py    cotrain and selftrain (discriminants trained in rounds until their targets repeat)
  core/labelled.py  verified labels start the rounds (labelled_start)
  core/held_out.py  the sample's held-out scores that calibrate the confidence (CALIBRATION_FOLDS)

Those modules never import this one. Adding a method is one entry here (plus its fit loop, if it
learns) and its tests: nothing else lists the methods.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pairspark.core.cosine import BaseAssignment
from pairspark.core.em import fit_centroid, fit_labelshift, fit_transductive
from pairspark.core.fitting import Fit, FitContext, Passes
from pairspark.core.model import ViewModel
from pairspark.core.ondemand import play_round_robin_ondemand, play_tournament_ondemand
from pairspark.core.pair_cache import PairCache, TreePairCache, worker_cache
from pairspark.core.rounds import fit_cotrain, fit_selftrain
from pairspark.core.scorers import Scorer, gnb_scorer, ovr_masks, ovr_scores
from pairspark.core.tournament import pair_coefficients, pair_weights, play_round_robin, play_tournament


@dataclass(frozen=True)
class Batch:
    """One view of a batch of valid items, as every method sees it."""

    x_unit: np.ndarray  # (n, D) float64 unit rows
    base: BaseAssignment  # cosines to the prompts and their argmax
    keys: np.ndarray  # (n,) uint64 bracket keys (xxhash64 of seed and item_id)
    top: np.ndarray | None  # (n, k) candidate classes when the bracket is limited, else None


# (labels (n,), per-class scores (n, C) or None for methods that only name a winner)
Prediction = tuple[np.ndarray, "np.ndarray | None"]


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    predict: Callable[[ViewModel, Batch], Prediction]
    # iterative methods: (passes, context) -> Fit; None: nothing to fit beyond the confident
    # statistics and masks every model has
    fit: Callable[[Passes, FitContext], Fit] | None = None
    # what predict derives from the fitted view, computed once on the driver so that it ships
    # with the view (ViewModel.derived) rather than being rebuilt in every task; None: nothing
    prepare: Callable[[ViewModel], object] | None = None
    min_views: int = 1
    # whether predict returns per-class scores; the methods that only name a winner take base's
    # probabilities for their confidence (core/calibration.py)
    scored: bool = True
    # whether fit reads FitContext.moments: the others fit first, and the confident moments ride on
    # their first pass over the items (spark/passes.py)
    needs_moments: bool = False

    @property
    def iterative(self) -> bool:
        return self.fit is not None


def _argmax(scores: np.ndarray) -> Prediction:
    labels = np.argmax(scores, axis=1) if len(scores) else np.zeros(0, np.int64)
    return labels, scores


def _scored(scorer: Scorer, batch: Batch) -> Prediction:
    return _argmax(scorer.scores(batch.x_unit, batch.base.cosines))


def _fitted(name: str) -> Callable[[ViewModel, Batch], Prediction]:
    return lambda view, batch: _scored(view.scorers[name], batch)


def coefficients(view: ViewModel) -> np.ndarray:
    """Per pair 1/||t_a|mask||, 1/||t_b|mask|| (P x 2, small): the tournaments' preparation
    when the view stores its masks."""
    return view.derived("coefficients", lambda v: pair_coefficients(v.vectors64, v.masks))


def stored_weights(view: ViewModel) -> np.ndarray | None:
    """The pairs' match weights stored for the kernels (core/tournament.pair_weights), or None
    when they are formed on the fly: built on first use in the process that classifies, never
    shipped (milliseconds to build, and the largest part of a view)."""
    return view.derived("pair_weights", lambda v: pair_weights(v.vectors64, v.masks, coefficients(v)), ship=False)


def pairs_on_demand(view: ViewModel) -> bool:
    """Whether the tournaments take their pairs from a per-worker cache (core/pair_cache.py): a view
    that stores no masks, and a view with a class tree (its matches use sibling masks)."""
    return view.on_demand or view.tree is not None


def prepare_pairs(view: ViewModel) -> object:
    """What the tournaments need, made on the driver: the stored masks' coefficients, or for a
    view whose pairs are made on demand the token that names its per-worker pair cache."""
    if pairs_on_demand(view):
        return view.derived("pair_cache_token", lambda v: uuid.uuid4().hex)
    return coefficients(view)


def pair_cache(view: ViewModel) -> PairCache:
    """The pairs this process has made for the view (core/pair_cache.py; a TreePairCache with a
    class tree): one cache per model per Python worker, found again by every task that ships the
    same model."""
    def build() -> PairCache:
        if view.tree is not None:
            return TreePairCache(view.vectors64, view.tree, view.moments, view.mask_settings)
        return PairCache(view.vectors64, view.moments, view.mask_settings)

    token = prepare_pairs(view)
    return view.derived("pair_cache", lambda v: worker_cache(token, build), ship=False)


def ovr_keep(view: ViewModel) -> np.ndarray:
    """(C, D) one-vs-rest masks from the confident statistics."""
    return view.derived("ovr_keep", lambda v: ovr_masks(v.moments, v.mask_settings))


def gnb(view: ViewModel) -> Scorer:
    """Gaussian naive Bayes fitted on the confident statistics."""
    return view.derived("gnb", lambda v: gnb_scorer(v.moments))


def _tournament(view: ViewModel, batch: Batch) -> Prediction:
    if pairs_on_demand(view):
        return play_tournament_ondemand(batch.x_unit, pair_cache(view), batch.keys, batch.top), None
    return play_tournament(batch.x_unit, view.vectors64, view.masks, coefficients(view), batch.keys, batch.top,
                           stored_weights(view)), None


def _round_robin(view: ViewModel, batch: Batch) -> Prediction:
    if pairs_on_demand(view):
        return play_round_robin_ondemand(batch.x_unit, pair_cache(view), batch.base.cosines, batch.top), None
    return play_round_robin(batch.x_unit, view.vectors64, view.masks, coefficients(view), batch.base.cosines,
                            batch.top, stored_weights(view)), None


def _entry(*methods: Method) -> dict[str, Method]:
    return {m.name: m for m in methods}


REGISTRY: dict[str, Method] = _entry(
    Method("base", "argmax cosine to the class prompts (METHOD.md step 1)",
           lambda view, batch: (batch.base.best, batch.base.cosines)),
    Method("pairwise", "the seed's tournament: each match on the dims that separate that pair (METHOD.md)",
           _tournament, prepare=prepare_pairs, scored=False),
    Method("ovr", "cosine on each class's one-vs-rest dims",
           lambda view, batch: _argmax(ovr_scores(batch.x_unit, view.vectors64, ovr_keep(view))), prepare=ovr_keep),
    Method("roundrobin", "every pair's match played; most wins, ties by base cosine",
           _round_robin, prepare=prepare_pairs, scored=False),
    Method("centroid", "prototypes re-estimated from the items each class wins", _fitted("centroid"), fit_centroid,
           needs_moments=True),
    Method("gnb", "Gaussian naive Bayes on the confident subset", lambda view, batch: _scored(gnb(view), batch),
           prepare=gnb),
    Method("transductive", "TransCLIP-style Gaussian EM with the prompt prior", _fitted("transductive"),
           fit_transductive),
    Method("labelshift", "base's probabilities with class priors re-estimated from the items by EM "
           "(label-shift EM, Saerens et al. 2002)", _fitted("labelshift"), fit_labelshift),
    Method("cotrain", "two views teach each other a shrunk-covariance discriminant (the default's answer)",
           _fitted("cotrain"), fit_cotrain, min_views=2),
    Method("selftrain", "each view teaches itself cotrain's discriminant, kept where its changes reproduce on "
           "disjoint halves, else base (the one-view default's answer)", _fitted("selftrain"), fit_selftrain),
)
METHODS = tuple(REGISTRY)
# NAME_class comes from the first of these that ran (docs/RESULTS.md says why cotrain leads, and
# docs/METHOD.md "One view" why selftrain answers when there is one view)
PRIMARY_ORDER = ("cotrain", "selftrain", "pairwise")


def primary_method(methods) -> str:
    """The method whose answer becomes NAME_class."""
    return next((m for m in PRIMARY_ORDER if m in methods), methods[0])


def default_methods(n_views: int) -> tuple[str, ...]:
    """base and the seed's pairwise always; the learner is cotrain with two views, selftrain with one."""
    return ("base", "pairwise", "cotrain" if n_views >= REGISTRY["cotrain"].min_views else "selftrain")


def iterative(methods) -> tuple[str, ...]:
    return tuple(m for m in methods if REGISTRY[m].iterative)


def prepare(view: ViewModel, methods: tuple[str, ...]) -> ViewModel:
    """Run each method's `prepare` on the driver, so that what it derives ships with the view
    rather than being rebuilt in every task. Returns the view."""
    missing = [m for m in methods if REGISTRY[m].iterative and m not in view.scorers]
    if missing:
        raise ValueError(f"view {view.name}: the model was not fitted for {', '.join(missing)}; refit with methods")
    for method in methods:
        if REGISTRY[method].prepare is not None:
            REGISTRY[method].prepare(view)
    view.vectors64
    return view
