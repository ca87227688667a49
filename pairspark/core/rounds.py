"""The discriminants trained in rounds on the driver's sample until their training targets repeat:
cotrain (two views teach each other) and selftrain (each view teaches itself, kept where its changes
reproduce). train_until_repeat runs the rounds; round 1 starts from the verified labels where there
are some (core/labelled.py); the sample's held-out scores come from core/held_out.py. Written against
core/fitting.Passes; registered in core/methods.py.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pairspark.core.fitting import Fit, FitContext, Passes, mean_stats, sample_cosines, training_stats
from pairspark.core.held_out import held_out_scores
from pairspark.core.labelled import labelled_start
from pairspark.core.scorers import LabelStats, Scorer, base_scorer, lda_scorer
from pairspark.core.targets import cotrain_targets, margin_threshold, top_margin
from pairspark.errors import UsageError

log = logging.getLogger("pairspark")

# cotrain's rounds run on the driver's sample until its training targets repeat (a fixed point or
# a cycle); this cap is only a guard (the shared sets repeat after 21 and 46 rounds)
COTRAIN_MAX_ROUNDS = 200


def cotrain_round(names: list[str], xs: dict[str, np.ndarray], cosines: dict[str, np.ndarray],
                  current: dict[str, Scorer] | None, thresholds: list[float],
                  verified: np.ndarray | None = None, rule=cotrain_targets) -> list[tuple[np.ndarray, np.ndarray]]:
    """One co-training round's (training label, keep mask) per view: from the base cosines in round
    1 (current None), else from the current discriminants, by `rule` (core/targets.cotrain_targets;
    calibration: second_opinion_targets); a verified row is trained on its verified class in both views."""
    scores = [cosines[n] if current is None else current[n].scores(xs[n], cosines[n]) for n in names]
    targets = rule([s.argmax(axis=1) for s in scores], [top_margin(s) for s in scores], thresholds)
    if verified is None or not (verified >= 0).any():
        return targets
    fixed = verified >= 0
    return [(np.where(fixed, verified, label), keep | fixed) for label, keep in targets]


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
    model = {n: lda_scorer(mean_stats([c[n] for c in cycle])) for n in names}
    return Trained(model, len(history), converged, len(cycle) if converged else None, tuple(cycle),
                   tuple(targets_seen[start:]))


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


# The stronger-view guard (docs/METHOD.md, "A taxonomy of 1,203 classes"): where the two views' base
# answers agree on fewer than this share of the sample, co-training is mostly one view overwriting
# the other (near-synonym classes: fashion_lvis 0.18, fashion+lvis_near150 0.21), and the view that
# keeps more of its own confident base answers through the rounds, the stronger one there, loses to
# its base (-14.3 and -18.5 points); it answers by base cosine, the other view keeps its cotrain
# discriminant. Every other measured catalog agrees on 0.35 or more (agnews 0.74, fashion_clip 0.81),
# where the guard changes nothing.
COTRAIN_GUARD_AGREEMENT = 0.3


def stronger_view_guard(names: list[str], xs: dict[str, np.ndarray], cosines: dict[str, np.ndarray],
                        model: dict[str, Scorer], margins: dict[str, float]) -> tuple[list[str], dict]:
    """The views that fall back to base after co-training, and the figures read (for meta.json).

    `agreement`: the share of rows whose two base answers agree. Below COTRAIN_GUARD_AGREEMENT, per
    view `kept`: the share of the rows where the view's base margin reaches its threshold (its
    confident answers) that its discriminant still answers the same; the view with the larger
    `kept` falls back to base (none on a tie). No label is read."""
    best = {n: cosines[n].argmax(axis=1) for n in names}
    agreement = float(np.mean(best[names[0]] == best[names[1]]))
    facts: dict = {"agreement": round(agreement, 4)}
    if agreement >= COTRAIN_GUARD_AGREEMENT:
        return [], facts
    kept = {}
    for n in names:
        confident = top_margin(cosines[n]) >= margins[n]
        kept[n] = (float(np.mean(model[n].predict(xs[n], cosines[n])[confident] == best[n][confident]))
                   if confident.any() else 0.0)
    facts["kept"] = {n: round(k, 4) for n, k in kept.items()}
    first, second = names
    if kept[first] == kept[second]:
        return [], facts
    return [first if kept[first] > kept[second] else second], facts


def fit_cotrain(passes: Passes, ctx: FitContext) -> Fit:
    """Co-training of two per-view discriminants (core/scorers.py), run to convergence.

    The rounds run on the driver's fixed sample (every valid item up to COTRAIN_SAMPLE) until their
    targets repeat (train_until_repeat), round 1 with the fit's base margin thresholds. When the
    sample is not every item, one pass over all items then fits the final discriminants on the
    targets the converged ones give (thresholds from the sample).

    Without verified labels of two classes or more, stronger_view_guard then reads the sample: where
    the views' base answers mostly disagree, the stronger view answers by base cosine (facts["guard"]
    says which, and the figures read); with such labels the rounds start from them and no guard is read."""
    names = list(ctx.views)
    sample, sample_verified = passes.sample()
    sample_cos = sample_cosines(names, sample, ctx)
    trained = train_until_repeat(names, sample, sample_cos, sample_verified, [ctx.margins[n] for n in names],
                                 cotrain_round, ctx.confident_share)
    log.info("cotrain: %s after %d rounds on %d items%s", "targets repeat" if trained.converged else "NOT converged",
             trained.rounds, len(sample[names[0]]), f" (period {trained.period})" if trained.converged else "")
    facts = {"passes": 0, "rounds": trained.rounds, "converged": trained.converged, "period": trained.period,
             "sample_items": int(len(sample[names[0]]))}
    fallback: list[str] = []
    if len(np.unique(sample_verified[sample_verified >= 0])) < 2:
        fallback, guard = stronger_view_guard(names, sample, sample_cos, trained.model, ctx.margins)
        facts["guard"] = {**guard, "base": fallback}
        if fallback:
            log.info("cotrain: the views' base answers agree on %.2f of the sample; %s answers by base cosine "
                     "(confident base answers kept: %s)", guard["agreement"], fallback[0], guard["kept"])

    def guarded(fit: Fit) -> Fit:
        if not fallback:
            return fit
        model = {n: base_scorer(*np.shape(ctx.class_vectors[n])) if n in fallback else s for n, s in fit.scorers.items()}
        return Fit(model, fit.facts, {n: h for n, h in fit.held_out.items() if n not in fallback})

    if len(sample[names[0]]) >= ctx.valid_items:  # the sample is every item
        return guarded(Fit(trained.model, facts, held_out_scores(names, sample, sample_cos, sample_verified,
                                                                 trained.cycle_stats, trained.cycle_targets)))
    thresholds = [margin_threshold(top_margin(trained.model[n].scores(sample[n], sample_cos[n])), ctx.confident_share)
                  for n in names]
    model, held_out = _final_pass(passes, names, trained.model, thresholds, cotrain_round, sample, sample_cos,
                                  sample_verified)
    return guarded(Fit(model, {**facts, "passes": 1}, held_out))


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
    sample_cos = sample_cosines(names, sample, ctx)
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
