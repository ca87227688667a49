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
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pairspark.core.cosine import BaseAssignment
from pairspark.core.scorers import (
    DISABLED,
    LabelStats,
    Scorer,
    base_scorer,
    centroid_scorer,
    cotrain_targets,
    gnb_scorer,
    label_shift_priors,
    label_shift_scorer,
    lda_scorer,
    log_softmax,
    margin_threshold,
    ovr_masks,
    ovr_scores,
    second_opinion_targets,
    softmax,
    top_margin,
    transductive_initial,
    transductive_scorer,
)
from pairspark.core.scorers import LABELSHIFT_TEMPERATURE
from pairspark.core.stats import ClassMoments
from pairspark.core.model import ViewModel
from pairspark.core.tournament import pair_coefficients, pair_weights, play_round_robin, play_tournament
from pairspark.errors import UsageError

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


def smoothed_temperature(scores: np.ndarray, labels: np.ndarray, smoothing: float) -> float:
    """The T minimising the cross-entropy of softmax(scores / T) against each row's label smoothed by
    `smoothing` (1 - smoothing on the label, the rest spread evenly over the other columns), by golden
    section over log T in [1e-4, 1e4] as core/calibration.fit_temperature. Unlike the plain
    likelihood, it has a finite minimum when the scores rank every label first (T would run to 0 and
    any source that is right on a few labels would outweigh every other)."""
    n, c = scores.shape
    finite = np.isfinite(scores)  # a class a source cannot score takes no share of the smoothing
    target = np.where(finite, smoothing / np.maximum(finite.sum(axis=1, keepdims=True) - 1, 1), 0.0)
    target[np.arange(n), labels] = 1.0 - smoothing
    target /= target.sum(axis=1, keepdims=True)

    def loss(log_t: float) -> float:
        logp = log_softmax(np.where(finite, scores, -np.inf) / np.exp(log_t))
        return float(-(target * np.where(target > 0, logp, 0.0)).sum() / n)

    lo, hi = np.log(1e-4), np.log(1e4)
    ratio = (np.sqrt(5.0) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(80):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return float(np.exp((lo + hi) / 2))


def labelled_start(x: np.ndarray, cosines: np.ndarray, verified: np.ndarray) -> np.ndarray | None:
    """(n, C) round-1 scores of one view given verified labels (docs/METHOD.md, "Verified labels"):
    the zero-shot evidence and the labels' own discriminant multiplied as two experts, each tempered
    on the verified rows (smoothed_temperature over the labelled classes, the labels smoothed by the
    rule of succession: a source right on all k of a class's k labels is right on the next with
    probability (k + 1) / (k + 2), k the mean number of labels per labelled class),

        log_softmax(cos / T_zs) + log_softmax(lda / T_lab),

    lda = lda_scorer on the verified rows alone (shrinkage min(1, D / n), as every discriminant here),
    T_lab fitted on its scores cross-fitted over CALIBRATION_FOLDS folds of the verified rows (in-sample
    scores would always be right). So each source weighs what it is worth on the labels: prompts that
    disagree with the labels get a large T_zs (flat), a discriminant on few or unseparable labels a
    large T_lab; more labels per class make the discriminant surer and heavier. A class with no
    verified row gets the labels' uniform log-probability (they say nothing about it): it keeps its
    zero-shot evidence. None with fewer than two labelled classes (no discriminant to fit)."""
    n_classes = cosines.shape[1]
    rows = np.flatnonzero(verified >= 0)
    labelled = np.bincount(verified[rows], minlength=n_classes) > 0
    if labelled.sum() < 2:
        return None
    x_rows, y = x[rows], verified[rows]
    stats = LabelStats.from_labels(x_rows, y, n_classes, with_scatter=True)
    held = np.full((len(rows), n_classes), DISABLED)
    folds = calibration_folds(len(rows))
    for k in range(CALIBRATION_FOLDS):
        fold = folds == k
        if not fold.any():
            continue
        rest = stats - LabelStats.from_labels(x_rows[fold], y[fold], n_classes, with_scatter=True)
        if (rest.weight > 0).sum() >= 2:
            held[fold] = lda_scorer(rest).scores(x_rows[fold], cosines[rows][fold])
    smoothing = 1.0 / (len(rows) / labelled.sum() + 2.0)
    cols = np.flatnonzero(labelled)
    y_cols = np.searchsorted(cols, y)
    usable = np.isfinite(held[np.arange(len(rows)), y])  # a row whose class left with its fold: no score for it
    t_zs = smoothed_temperature(cosines[rows][:, cols], y_cols, smoothing)
    t_lab = smoothed_temperature(held[usable][:, cols], y_cols[usable], smoothing) if usable.any() else 1.0
    evidence = np.full((len(x), n_classes), -np.log(labelled.sum()))
    evidence[:, labelled] = log_softmax(lda_scorer(stats).scores(x, cosines)[:, labelled] / t_lab)
    return log_softmax(cosines / t_zs) + evidence


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
    sample scored by discriminants fitted without each row's fold (held_out_scores), per view: the
    confidence is calibrated on those (core/confidence.calibrate). A view missing from held_out is
    scored by its fitted scorer (a method whose fit reproduces no label of its own)."""

    scorers: dict[str, Scorer]
    facts: dict
    held_out: dict[str, np.ndarray] = field(default_factory=dict)


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


def fit_centroid(passes: Passes, ctx: FitContext) -> Fit:
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
    return Fit(scorers, {"passes": CENTROID_ITERATIONS - 1})


def fit_transductive(passes: Passes, ctx: FitContext) -> Fit:
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
    return Fit(current, {"passes": TRANSDUCTIVE_ITERATIONS})


def fit_labelshift(passes: Passes, ctx: FitContext) -> Fit:
    """Class priors by EM on the driver's sample (core/scorers.label_shift_priors: base's
    probabilities at LABELSHIFT_TEMPERATURE, a verified row counting as its class). When the
    sample is not every item, one pass over all items then takes the mean of every item's
    posteriors under the sample's priors: one EM step on all items from the sample's fixed point."""
    names = list(ctx.views)
    sample, verified = passes.sample()
    cosines = _sample_cosines(names, sample, ctx)
    priors, facts = {}, {"passes": 0, "sample_items": int(len(sample[names[0]])), "iterations": {}, "converged": True}

    def known(rows_verified: np.ndarray, n_classes: int) -> np.ndarray:
        fixed = np.zeros((len(rows_verified), n_classes))
        rows = np.flatnonzero(rows_verified >= 0)
        fixed[rows, rows_verified[rows]] = 1.0
        return fixed

    for n in names:
        probs = softmax(LABELSHIFT_TEMPERATURE * cosines[n])
        priors[n], iterations, converged = label_shift_priors(probs, known(verified, probs.shape[1]))
        facts["iterations"][n] = iterations
        facts["converged"] = facts["converged"] and converged
    if len(sample[names[0]]) < ctx.valid_items:

        def labeller(xs, cos, rows_verified):
            out = {}
            for n in names:
                fixed = known(rows_verified, cos[n].shape[1])
                z = softmax(LABELSHIFT_TEMPERATURE * cos[n]) * priors[n]
                z = z / np.maximum(z.sum(axis=1, keepdims=True), 1e-300)
                z[fixed.sum(axis=1) > 0] = fixed[fixed.sum(axis=1) > 0]
                out[n] = LabelStats(z.sum(axis=0), np.zeros((z.shape[1], xs[n].shape[1])),
                                    np.zeros((z.shape[1], xs[n].shape[1])), np.zeros((0, 0)))
            return out

        stats = passes.stats(labeller)
        priors = {n: stats[n].weight / max(stats[n].weight.sum(), 1e-300) for n in names}
        facts["passes"] = 1
    log.info("labelshift: priors %s", {n: np.round(p, 3).tolist() for n, p in priors.items()})
    return Fit({n: label_shift_scorer(priors[n], sample[n].shape[1]) for n in names}, facts)


def cotrain_round(names: list[str], xs: dict[str, np.ndarray], cosines: dict[str, np.ndarray],
                  current: dict[str, Scorer] | None, thresholds: list[float],
                  verified: np.ndarray | None = None, rule=cotrain_targets) -> list[tuple[np.ndarray, np.ndarray]]:
    """One co-training round's (training label, keep mask) per view: from the base cosines in round
    1 (current None), else from the current discriminants, by `rule` (core/scorers.cotrain_targets;
    calibration: second_opinion_targets); a verified row is trained on its verified class in both views."""
    scores = [cosines[n] if current is None else current[n].scores(xs[n], cosines[n]) for n in names]
    targets = rule([s.argmax(axis=1) for s in scores], [top_margin(s) for s in scores], thresholds)
    if verified is None or not (verified >= 0).any():
        return targets
    fixed = verified >= 0
    return [(np.where(fixed, verified, label), keep | fixed) for label, keep in targets]


def _mean_stats(stats: list[LabelStats]) -> LabelStats:
    k = float(len(stats))
    return LabelStats(sum(s.weight for s in stats) / k, sum(s.sums for s in stats) / k, sum(s.sumsq for s in stats) / k,
                      sum(s.scatter for s in stats) / k)


# (view names, unit rows per view, cosines per view, current discriminants or None in round 1, confidence
# threshold per view, verified class per row or None) -> (training label, keep mask) per view
Targets = Callable[[list[str], dict[str, np.ndarray], dict[str, np.ndarray], "dict[str, Scorer] | None", list[float],
                    "np.ndarray | None"], list[tuple[np.ndarray, np.ndarray]]]


@dataclass(frozen=True)
class Trained:
    """Discriminants trained on a fixed set of rows until their training targets repeat, with what
    they were fitted on: the statistics of each round of the cycle (the model is fitted on their
    mean) and each round's (training label, keep) per view, so that a row's own contribution can be
    taken out again (held_out_scores)."""

    model: dict[str, Scorer]
    rounds: int
    converged: bool
    period: int | None
    cycle_stats: tuple[dict[str, LabelStats], ...] = ()
    cycle_targets: tuple[list[tuple[np.ndarray, np.ndarray]], ...] = ()


def train_until_repeat(names: list[str], xs: dict[str, np.ndarray], cosines: dict[str, np.ndarray],
                       verified: np.ndarray, thresholds: list[float], targets_of: Targets,
                       confident_share: float) -> Trained:
    """Rounds of (targets from the current discriminants -> new discriminants) on fixed rows.

    Round 1 takes its targets from the base cosines with the given thresholds, each later round from
    the previous round's discriminants, the thresholds being the confident_share quantile of their
    margins. With verified rows of at least two classes, round 1 takes its targets from each view's
    labelled_start scores instead (thresholds: the confident_share quantile of their margins). The round map is deterministic on a finite set of training targets, so the targets
    must repeat: at the first repeat (a fixed point, period 1, or a cycle, period p) the loop stops
    and the discriminants are fitted on the mean of the cycle's statistics, which does not depend
    on where the cycle was entered. Nothing depends on a round cap (COTRAIN_MAX_ROUNDS is a guard)."""
    n_classes = {n: cosines[n].shape[1] for n in names}
    current: dict[str, Scorer] | None = None
    seen: dict[bytes, int] = {}
    history: list[dict[str, LabelStats]] = []
    targets_seen: list[list[tuple[np.ndarray, np.ndarray]]] = []
    start: int | None = None
    first = cosines  # round 1's scores
    starts = {n: labelled_start(xs[n], cosines[n], verified) for n in names} if (verified >= 0).any() else {}
    if starts and all(s is not None for s in starts.values()):
        first = starts
        thresholds = [margin_threshold(top_margin(first[n]), confident_share) for n in names]
    for _ in range(COTRAIN_MAX_ROUNDS):
        targets = targets_of(names, xs, first if current is None else cosines, current, thresholds, verified)
        state = hashlib.sha256(b"".join(np.where(keep, label, -1).astype(np.int64).tobytes() for label, keep in targets)).digest()
        if state in seen:
            start = seen[state]
            break
        stats = {n: training_stats(xs[n], label, keep, verified, n_classes[n], with_scatter=True)
                 for n, (label, keep) in zip(names, targets)}
        if min(stats[n].weight.sum() for n in names) == 0:
            raise UsageError(f"{targets_of.__name__.split('_')[0]}: no item to learn from (no view is confident "
                             "about any item and the views agree on none)")
        seen[state] = len(history)
        history.append(stats)
        targets_seen.append(targets)
        current = {n: lda_scorer(stats[n]) for n in names}
        thresholds = [margin_threshold(top_margin(current[n].scores(xs[n], cosines[n])), confident_share) for n in names]
    converged = start is not None
    start = start if converged else len(history) - 1
    cycle = history[start:]
    model = {n: lda_scorer(_mean_stats([c[n] for c in cycle])) for n in names}
    return Trained(model, len(history), converged, len(cycle) if converged else None, tuple(cycle),
                   tuple(targets_seen[start:]))


# The driver's sample is split into this many folds to score each row by a discriminant fitted
# without its fold (held_out_scores): confidence is calibrated on answers the learner did not
# train on (docs/METHOD.md, "Confidence").
CALIBRATION_FOLDS = 10
CALIBRATION_FOLD_SEED = 0


def calibration_folds(rows: int) -> np.ndarray:
    """(rows,) fold index of each sample row: a seeded permutation dealt round robin (folds differ
    in size by at most one row)."""
    folds = np.empty(rows, np.int64)
    folds[np.random.default_rng(CALIBRATION_FOLD_SEED).permutation(rows)] = np.arange(rows) % CALIBRATION_FOLDS
    return folds


def held_out_scores(names: list[str], xs: dict[str, np.ndarray], cosines: dict[str, np.ndarray], verified: np.ndarray,
                    cycle_stats, cycle_targets) -> dict[str, np.ndarray]:
    """Per view, every row's discriminant scores from a discriminant fitted on the same statistics
    less its own fold's rows (their training labels in each round of the cycle, verified rows at
    their weight): K-fold cross-fitting of the final fit, with the training targets held fixed.
    A discriminant scores the rows it trained on as if it had always been right about them (it
    reproduces its own pseudo-labels, and a verified label it was given); a temperature fitted on
    those scores runs to 0. Cheap: one scatter of the sample in all and K solves per view."""
    rows = len(verified)
    folds = calibration_folds(rows)
    out = {}
    for v, name in enumerate(names):
        scores = np.empty((rows, cosines[name].shape[1]))
        for k in range(CALIBRATION_FOLDS):
            fold = np.flatnonzero(folds == k)
            if not len(fold):
                continue
            parts = []
            for stats, targets in zip(cycle_stats, cycle_targets):
                label, keep = targets[v]
                own = training_stats(xs[name][fold], label[fold], keep[fold], verified[fold], len(stats[name].weight),
                                     with_scatter=True)
                parts.append(stats[name] - own)
            rest = _mean_stats(parts)
            if rest.weight.sum() <= 0:  # nothing trained outside this fold: no held-out model
                raise UsageError("calibration: every training item of a view is in one fold")
            scores[fold] = lda_scorer(rest).scores(xs[name][fold], cosines[name][fold])
        out[name] = scores
    return out


def _sample_cosines(names: list[str], sample: dict[str, np.ndarray], ctx: FitContext) -> dict[str, np.ndarray]:
    return {n: sample[n] @ np.asarray(ctx.class_vectors[n], np.float64).T for n in names}


def _final_pass(passes: Passes, names: list[str], model: dict[str, Scorer], thresholds: list[float],
                targets_of: Targets, sample: dict[str, np.ndarray], sample_cos: dict[str, np.ndarray],
                sample_verified: np.ndarray) -> tuple[dict[str, Scorer], dict[str, np.ndarray]]:
    """One pass over every item: discriminants fitted on the targets the trained ones give; and the
    sample's held-out scores under them (the sample's rows are among the items and their targets
    the same function of the same rows, so their folds' contributions can be taken out again)."""

    def labeller(xs, cosines, verified):
        return {n: training_stats(xs[n], label, keep, verified, cosines[n].shape[1], with_scatter=True)
                for n, (label, keep) in zip(names, targets_of(names, xs, cosines, model, thresholds, verified))}

    stats = passes.stats(labeller)
    targets = targets_of(names, sample, sample_cos, model, thresholds, sample_verified)
    return ({n: lda_scorer(stats[n]) for n in names},
            held_out_scores(names, sample, sample_cos, sample_verified, [stats], [targets]))


def fit_cotrain(passes: Passes, ctx: FitContext) -> Fit:
    """Co-training of two per-view discriminants (core/scorers.py), run to convergence.

    The rounds run on the driver's fixed sample (every valid item up to COTRAIN_SAMPLE) until their
    targets repeat (train_until_repeat), round 1 with the fit's base margin thresholds. When the
    sample is not every item, one pass over all items then fits the final discriminants on the
    targets the converged ones give (thresholds from the sample)."""
    names = list(ctx.views)
    sample, sample_verified = passes.sample()
    sample_cos = _sample_cosines(names, sample, ctx)
    trained = train_until_repeat(names, sample, sample_cos, sample_verified, [ctx.margins[n] for n in names],
                                 cotrain_round, ctx.confident_share)
    log.info("cotrain: %s after %d rounds on %d items%s", "targets repeat" if trained.converged else "NOT converged",
             trained.rounds, len(sample[names[0]]), f" (period {trained.period})" if trained.converged else "")
    facts = {"passes": 0, "rounds": trained.rounds, "converged": trained.converged, "period": trained.period,
             "sample_items": int(len(sample[names[0]]))}
    if len(sample[names[0]]) >= ctx.valid_items:  # the sample is every item
        return Fit(trained.model, facts, held_out_scores(names, sample, sample_cos, sample_verified, trained.cycle_stats,
                                                         trained.cycle_targets))
    thresholds = [margin_threshold(top_margin(trained.model[n].scores(sample[n], sample_cos[n])), ctx.confident_share)
                  for n in names]
    model, held_out = _final_pass(passes, names, trained.model, thresholds, cotrain_round, sample, sample_cos,
                                  sample_verified)
    return Fit(model, {**facts, "passes": 1}, held_out)


def selftrain_round(names: list[str], xs: dict[str, np.ndarray], cosines: dict[str, np.ndarray],
                    current: dict[str, Scorer] | None, thresholds: list[float],
                    verified: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """One self-training round's (training label, keep mask) per view: each view's own answer where
    it is confident (margin >= its threshold), from the base cosines in round 1; a verified row is
    trained on its verified class."""
    out = []
    for n, threshold in zip(names, thresholds):
        scores = cosines[n] if current is None else current[n].scores(xs[n], cosines[n])
        label, keep = scores.argmax(axis=1), top_margin(scores) >= threshold
        if verified is not None and (verified >= 0).any():
            fixed = verified >= 0
            label, keep = np.where(fixed, verified, label), keep | fixed
        out.append((label, keep))
    return out


# selftrain is trusted on a view without verified labels when, on every one of SELFTRAIN_SPLITS seeded
# splits of the sample into two disjoint halves trained alone, the share of the answers either half
# changes from base that the other half changes the same way is at least this: on every split most of
# its changes are reproducible structure, not drift (docs/METHOD.md, "One view": until 2026-12-04 the
# median of the splits was read, which trusted drifting views whose splits straddle 0.5, e.g.
# fashion_clip text on a Zipf subsample, 0.43-0.66, -9.2 points). With verified labels of at least
# two classes the labels start the rounds (labelled_start) and anchor them, and it is always kept.
SELFTRAIN_REPRODUCIBLE = 0.5
SELFTRAIN_SPLITS = 5
SELFTRAIN_SEED = 0


def reproducibility(base: np.ndarray, first: np.ndarray, second: np.ndarray) -> float:
    """Share of the rows that either answer changes from base on which both make the same change
    (1.0 when neither changes anything)."""
    changed = (first != base) | (second != base)
    if not changed.any():
        return 1.0
    return float(np.sum(changed & (first == second)) / np.sum(changed))


def fit_selftrain(passes: Passes, ctx: FitContext) -> Fit:
    """Each view alone teaches itself a shrunk-covariance discriminant from its confident answers
    (train_until_repeat with selftrain_round), on the driver's sample; kept where verified labels of
    two classes or more start and anchor it (labelled_start), else only where its changes to base
    reproduce on every one of SELFTRAIN_SPLITS splits into disjoint halves; else the view answers by
    base cosine."""
    names = list(ctx.views)
    sample, sample_verified = passes.sample()
    sample_cos = _sample_cosines(names, sample, ctx)
    rows = len(sample_verified)
    rng = np.random.default_rng(SELFTRAIN_SEED)
    splits = [rng.permutation(rows) for _ in range(SELFTRAIN_SPLITS)]
    model: dict[str, Scorer] = {}
    held_out: dict[str, np.ndarray] = {}
    views: dict[str, dict] = {}
    for n in names:
        x, cos = sample[n], sample_cos[n]
        trained = train_until_repeat([n], {n: x}, {n: cos}, sample_verified, [ctx.margins[n]], selftrain_round,
                                     ctx.confident_share)
        scores = []
        labelled = int(np.sum(np.bincount(sample_verified[sample_verified >= 0], minlength=cos.shape[1]) > 0))
        for order in splits if labelled < 2 else ():
            halves = []
            for part in (order[: rows // 2], order[rows // 2 :]):
                try:
                    half = train_until_repeat([n], {n: x[part]}, {n: cos[part]}, sample_verified[part],
                                              [margin_threshold(top_margin(cos[part]), ctx.confident_share)],
                                              selftrain_round, ctx.confident_share)
                except UsageError:  # a half with nothing to learn from: nothing is reproduced
                    break
                halves.append(half.model[n].predict(x, cos))
            scores.append(reproducibility(cos.argmax(axis=1), *halves) if len(halves) == 2 else 0.0)
        trusted = labelled >= 2 or min(scores) >= SELFTRAIN_REPRODUCIBLE
        log.info("selftrain %s: %s after %d rounds on %d items; changes reproduced %s: %s", n,
                 "targets repeat" if trained.converged else "NOT converged", trained.rounds, rows,
                 ", ".join(f"{r:.2f}" for r in scores) or "(not checked: verified labels)",
                 "kept" if trusted else "falls back to base")
        model[n] = trained.model[n] if trusted else base_scorer(*np.shape(ctx.class_vectors[n]))
        if trusted and rows >= ctx.valid_items:
            held_out.update(held_out_scores([n], {n: x}, {n: cos}, sample_verified, trained.cycle_stats,
                                            trained.cycle_targets))
        views[n] = {"rounds": trained.rounds, "converged": trained.converged, "period": trained.period,
                    "reproduced": [round(r, 4) for r in scores], "trusted": trusted,
                    "trusted_by": "verified labels" if labelled >= 2 else "reproducibility"}
    facts = {"passes": 0, "sample_items": rows, "views": views}
    learn = [n for n in names if views[n]["trusted"]]
    if not learn or rows >= ctx.valid_items:
        return Fit(model, facts, held_out)
    thresholds = [margin_threshold(top_margin(model[n].scores(sample[n], sample_cos[n])), ctx.confident_share)
                  for n in learn]
    final, held_out = _final_pass(passes, learn, model, thresholds, selftrain_round, sample, sample_cos, sample_verified)
    return Fit({**model, **final}, {**facts, "passes": 1}, held_out)


def coefficients(view: ViewModel) -> np.ndarray:
    """Per pair 1/||t_a|mask||, 1/||t_b|mask|| (P x 2, small): the tournaments' preparation."""
    return view.derived("coefficients", lambda v: pair_coefficients(v.vectors64, v.masks))


def stored_weights(view: ViewModel) -> np.ndarray | None:
    """The pairs' match weights stored for the kernels (core/tournament.pair_weights), or None
    when they are formed on the fly: built on first use in the process that classifies, never
    shipped (milliseconds to build, and the largest part of a view)."""
    return view.derived("pair_weights", lambda v: pair_weights(v.vectors64, v.masks, coefficients(v)), ship=False)


def ovr_keep(view: ViewModel) -> np.ndarray:
    """(C, D) one-vs-rest masks from the confident statistics."""
    return view.derived("ovr_keep", lambda v: ovr_masks(v.moments, v.mask_settings))


def gnb(view: ViewModel) -> Scorer:
    """Gaussian naive Bayes fitted on the confident statistics."""
    return view.derived("gnb", lambda v: gnb_scorer(v.moments))


def _tournament(view: ViewModel, batch: Batch) -> Prediction:
    return play_tournament(batch.x_unit, view.vectors64, view.masks, coefficients(view), batch.keys, batch.top,
                           stored_weights(view)), None


def _round_robin(view: ViewModel, batch: Batch) -> Prediction:
    return play_round_robin(batch.x_unit, view.vectors64, view.masks, coefficients(view), batch.base.cosines,
                            batch.top, stored_weights(view)), None


def _entry(*methods: Method) -> dict[str, Method]:
    return {m.name: m for m in methods}


REGISTRY: dict[str, Method] = _entry(
    Method("base", "argmax cosine to the class prompts (METHOD.md step 1)",
           lambda view, batch: (batch.base.best, batch.base.cosines)),
    Method("pairwise", "the seed's tournament: each match on the dims that separate that pair (METHOD.md)",
           _tournament, prepare=coefficients, scored=False),
    Method("ovr", "cosine on each class's one-vs-rest dims",
           lambda view, batch: _argmax(ovr_scores(batch.x_unit, view.vectors64, ovr_keep(view))), prepare=ovr_keep),
    Method("roundrobin", "every pair's match played; most wins, ties by base cosine",
           _round_robin, prepare=coefficients, scored=False),
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
