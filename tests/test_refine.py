"""The issue-5 methods (core/refine.py, round robin) against independent numpy references and on
tiny hand-made data whose right answer is known. No Spark here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pairspark.core.masks import MaskSettings, pair_masks
from pairspark.core.scorers import (
    LabelStats,
    centroid_scorer,
    gnb_scorer,
    lda_scorer,
    ovr_masks,
    ovr_predict,
    ovr_scores,
    softmax,
    transductive_initial,
    transductive_scorer,
)
from pairspark.core.stats import ClassMoments
from pairspark.core.targets import cotrain_targets, top_margin
from pairspark.core.tournament import pair_coefficients, pair_weights, play_round_robin
from tests.reference import normalize_rows


def _blobs(rng, n_per_class, centres, spread):
    labels = np.repeat(np.arange(len(centres)), n_per_class)
    x = np.asarray(centres, float)[labels] + spread * rng.normal(size=(len(labels), len(centres[0])))
    return normalize_rows(x), labels


# ---------- statistics ----------

def test_label_stats_from_labels_equal_one_hot_weights_and_survive_the_flat_round_trip():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6))
    labels = rng.integers(0, 4, 50)
    keep = rng.random(50) < 0.7
    hard = LabelStats.from_labels(x, labels, 5, keep, with_scatter=True)
    soft = LabelStats.from_weights(x, np.eye(5)[labels] * keep[:, None], with_scatter=True)
    for a, b in zip((hard.weight, hard.sums, hard.sumsq, hard.scatter), (soft.weight, soft.sums, soft.sumsq, soft.scatter)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert hard.weight[4] == 0  # a class nobody has
    back = LabelStats.from_flat(hard.to_flat(), 5, 6)
    np.testing.assert_array_equal(back.scatter, hard.scatter)
    halves = LabelStats.from_labels(x[:20], labels[:20], 5, keep[:20], True) + LabelStats.from_labels(x[20:], labels[20:], 5, keep[20:], True)
    np.testing.assert_allclose(halves.sums, hard.sums, atol=1e-12)



def test_label_stats_from_labels_by_hand_keep_all_none_and_a_bad_label():
    x = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    stats = LabelStats.from_labels(x, np.array([1, 0, 1]), 3, with_scatter=True)
    assert stats.weight.tolist() == [1.0, 2.0, 0.0]
    assert stats.sums.tolist() == [[3.0, -1.0], [1.5, 2.5], [0.0, 0.0]]
    assert stats.sumsq.tolist() == [[9.0, 1.0], [1.25, 4.25], [0.0, 0.0]]
    assert stats.scatter.tolist() == (x.T @ x).tolist()
    none = LabelStats.from_labels(x, np.array([1, 0, 1]), 3, np.zeros(3, bool), with_scatter=True)
    assert not none.weight.any() and not none.scatter.any()
    with pytest.raises(ValueError, match="labels must lie"):
        LabelStats.from_labels(x, np.array([1, 3, 1]), 3)

# ---------- GNB ----------

def _gnb_reference(x, labels, n_classes):
    """Log prior + sum of per-dim normal log densities, written out per item and class."""
    n, d = x.shape
    pooled = np.zeros(d)
    for c in range(n_classes):
        members = x[labels == c]
        if len(members):
            pooled += ((members - members.mean(axis=0)) ** 2).sum(axis=0)
    pooled /= n
    scores = np.full((n, n_classes), -np.inf)
    for c in range(n_classes):
        members = x[labels == c]
        if not len(members):
            continue
        mean = members.mean(axis=0)
        var = (((members - mean) ** 2).sum(axis=0) + pooled) / (len(members) + 1)
        for i in range(n):
            log_density = sum(-0.5 * math.log(2 * math.pi * var[j]) - (x[i, j] - mean[j]) ** 2 / (2 * var[j]) for j in range(d))
            scores[i, c] = math.log(len(members) / n) + log_density
    return scores


def test_gnb_scores_equal_a_per_item_reference():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 5))
    labels = rng.integers(0, 3, 40)
    labels[labels == 2] = 1  # class 2 empty: disabled
    scorer = gnb_scorer(ClassMoments.from_batch(x, labels, 4 - 1))
    got = scorer.scores(x, np.zeros((40, 3)))
    want = _gnb_reference(x, labels, 3)
    assert np.all(np.isneginf(got[:, 2])) and np.all(np.isneginf(want[:, 2]))
    np.testing.assert_allclose(got[:, :2], want[:, :2], rtol=1e-10)


def test_gnb_tells_classes_apart_by_spread_where_cosine_cannot():
    rng = np.random.default_rng(2)
    # same mean, one class tight and one wide: only the variances separate them
    tight = rng.normal(scale=0.05, size=(200, 4)) + [1, 0, 0, 0]
    wide = rng.normal(scale=0.6, size=(200, 4)) + [1, 0, 0, 0]
    x = np.vstack([tight, wide])
    truth = np.repeat([0, 1], 200)
    scorer = gnb_scorer(ClassMoments.from_batch(x, truth, 2))
    assert (scorer.predict(x, np.zeros((400, 2))) == truth).mean() > 0.9


# ---------- transductive (TransCLIP-ZS core) ----------

def _transclip_reference(x, t, iterations, temperature, prompt_weight):
    """EM written from the paper's updates: z_ic ~ yhat_ic^lambda pi_c N(x_i; mu_c, diag s^2)."""
    prior = np.exp(temperature * (x @ t.T))
    prior /= prior.sum(axis=1, keepdims=True)
    z = prior.copy()
    n, d = x.shape
    for _ in range(iterations):
        mu = np.array([(z[:, c : c + 1] * x).sum(axis=0) / z[:, c].sum() for c in range(len(t))])
        var = np.zeros(d)
        for c in range(len(t)):
            var += (z[:, c : c + 1] * (x - mu[c]) ** 2).sum(axis=0)
        var /= n
        pi = z.sum(axis=0) / n
        log_post = np.empty_like(z)
        for i in range(n):
            for c in range(len(t)):
                log_post[i, c] = (prompt_weight * math.log(prior[i, c]) + math.log(pi[c])
                                  - 0.5 * np.sum((x[i] - mu[c]) ** 2 / var))
        log_post -= log_post.max(axis=1, keepdims=True)
        z = np.exp(log_post)
        z /= z.sum(axis=1, keepdims=True)
    return z


def test_transductive_em_equals_the_reference_em():
    rng = np.random.default_rng(3)
    x, _ = _blobs(rng, 15, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], 0.4)
    t = normalize_rows(np.array([[1, 0.3, 0, 0], [0, 1, 0.3, 0], [0.3, 0, 1, 0]], float))
    z = transductive_initial(x @ t.T, 10.0)
    for _ in range(4):
        scorer = transductive_scorer(LabelStats.from_weights(x, z), temperature=10.0, prompt_weight=1.0)
        z = softmax(scorer.scores(x, x @ t.T))
    np.testing.assert_allclose(z, _transclip_reference(x, t, 4, 10.0, 1.0), rtol=1e-8, atol=1e-12)


def test_transductive_fixes_a_biased_prompt_on_balanced_clusters():
    rng = np.random.default_rng(4)
    c0, c1 = np.repeat([1.0, 0.0], 10), np.repeat([0.0, 1.0], 10)
    x, truth = _blobs(rng, 100, [c0, c1], 1.0)
    t = normalize_rows(np.array([c0, 2 * c0 + c1]))  # class 1's prompt leans far into class 0
    base = (x @ t.T).argmax(axis=1)
    z = transductive_initial(x @ t.T)
    for _ in range(5):
        scorer = transductive_scorer(LabelStats.from_weights(x, z))
        z = softmax(scorer.scores(x, x @ t.T))
    assert (z.argmax(axis=1) == truth).mean() > (base == truth).mean() + 0.03


# ---------- LDA (cotrain's discriminant) ----------

def test_lda_scores_equal_the_textbook_discriminant():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 4))
    labels = rng.integers(0, 3, 60)
    keep = rng.random(60) < 0.8
    scorer = lda_scorer(LabelStats.from_labels(x, labels, 3, keep, with_scatter=True), shrinkage=0.2)
    xs, ls = x[keep], labels[keep]
    means = np.array([xs[ls == c].mean(axis=0) for c in range(3)])
    within = sum(((xs[ls == c] - means[c]).T @ (xs[ls == c] - means[c])) for c in range(3)) / len(xs)
    shrunk = 0.8 * within + 0.2 * np.diag(np.diag(within))
    inverse = np.linalg.inv(shrunk)
    want = np.array([[xi @ inverse @ m - 0.5 * m @ inverse @ m for m in means] for xi in x])
    np.testing.assert_allclose(scorer.scores(x, np.zeros((60, 3))), want, rtol=1e-9)


def test_lda_shrinks_by_dims_over_training_weight_and_is_diagonal_when_items_are_fewer_than_dims():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(40, 8))
    labels = rng.integers(0, 2, 40)
    for rows in (40, 6):  # lambda = 8 / 40, then min(1, 8 / 6) = 1: a diagonal (naive Bayes-like) discriminant
        stats = LabelStats.from_labels(x[:rows], labels[:rows], 2, with_scatter=True)
        xs, ls = x[:rows], labels[:rows]
        means = np.array([xs[ls == c].mean(axis=0) for c in range(2)])
        within = sum(((xs[ls == c] - means[c]).T @ (xs[ls == c] - means[c])) for c in range(2)) / rows
        lam = min(1.0, 8 / rows)
        inverse = np.linalg.inv((1 - lam) * within + lam * np.diag(np.diag(within)))
        want = np.array([[xi @ inverse @ m - 0.5 * m @ inverse @ m for m in means] for xi in x])
        np.testing.assert_allclose(lda_scorer(stats).scores(x, np.zeros((40, 2))), want, rtol=1e-9)


def test_lda_learns_a_direction_the_prompt_misses():
    rng = np.random.default_rng(6)
    x, truth = _blobs(rng, 150, [[1, 0.2, 0], [1, -0.2, 0]], 0.05)
    scorer = lda_scorer(LabelStats.from_labels(x, truth, 2, with_scatter=True))
    assert (scorer.predict(x, np.zeros((300, 2))) == truth).mean() > 0.97


# ---------- cotrain ----------

def test_cotrain_targets_keep_a_views_own_confident_answer_and_teach_it_the_other_views_elsewhere():
    labels = [np.array([0, 1, 2, 0, 3]), np.array([0, 2, 1, 1, 1])]
    margins = [np.array([5.0, 0.1, 3.0, 0.2, 2.0]), np.array([1.0, 4.0, 0.1, 0.1, 2.0])]
    (label_a, keep_a), (label_b, keep_b) = cotrain_targets(labels, margins, [1.0, 1.0])
    # item 0 agreed; item 1: only b confident -> a learns b's 2, b keeps its 2; item 2: only a
    # confident -> b learns a's 2; item 3: nobody; item 4: both confident, disagreeing -> each its own
    assert keep_a.tolist() == [True, True, True, False, True] and label_a[[0, 1, 2, 4]].tolist() == [0, 2, 2, 3]
    assert keep_b.tolist() == [True, True, True, False, True] and label_b[[0, 1, 2, 4]].tolist() == [0, 2, 2, 1]


def test_top_margin_handles_disabled_classes():
    scores = np.array([[3.0, 1.0, -np.inf], [2.0, -np.inf, -np.inf]])
    assert top_margin(scores).tolist() == [2.0, np.inf]


def test_cotrain_rounds_repair_a_view_whose_prompt_is_wrong_for_one_class():
    """View a's prompts are right; view b's prompt for class 1 points at class 2's items. A few
    rounds of cotrain (the Spark job's loop, written with the same pure functions) fix view b."""
    rng = np.random.default_rng(7)
    centres = np.eye(3) * 1.0
    xa, truth = _blobs(rng, 80, centres, 0.3)
    xb, _ = _blobs(rng, 80, centres[[0, 1, 2]], 0.3)
    ta = normalize_rows(centres + 0.1)
    tb = normalize_rows(np.array([[1, 0, 0], [0, 0.2, 1], [0.5, 0, 1]], float))  # class 2 items look like 1
    xs, ts = [xa, xb], [ta, tb]
    base_b = (xb @ tb.T).argmax(axis=1)
    scores = [x @ t.T for x, t in zip(xs, ts)]
    thresholds = [np.quantile(top_margin(s), 0.3) for s in scores]
    for _ in range(4):
        targets = cotrain_targets([s.argmax(axis=1) for s in scores], [top_margin(s) for s in scores], thresholds)
        scorers = [lda_scorer(LabelStats.from_labels(x, lab, 3, keep, with_scatter=True)) for x, (lab, keep) in zip(xs, targets)]
        scores = [sc.scores(x, x @ t.T) for sc, x, t in zip(scorers, xs, ts)]
        thresholds = [np.quantile(top_margin(s), 0.3) for s in scores]
    assert (scores[1].argmax(axis=1) == truth).mean() > (base_b == truth).mean() + 0.1
    assert (scores[1].argmax(axis=1) == truth).mean() > 0.95


# ---------- centroid ----------

def test_centroid_moves_a_prompt_onto_its_items_and_keeps_an_empty_class_prompt():
    rng = np.random.default_rng(8)
    x, truth = _blobs(rng, 100, [[1, 0, 0], [0, 1, 0]], 0.2)
    t = normalize_rows(np.array([[1, 0.8, 0], [0, 1, 0], [0, 0, 1]], float))  # class 2 has no items
    base = (x @ t.T).argmax(axis=1)
    confident = top_margin(x @ t.T) >= np.quantile(top_margin(x @ t.T), 0.5)
    scorer = centroid_scorer(LabelStats.from_labels(x, base, 3, confident), t)
    np.testing.assert_allclose(scorer.weights[2], t[2])
    assert (scorer.predict(x, x @ t.T) == truth).mean() > (base == truth).mean()


# ---------- one-vs-rest ----------

def test_ovr_masks_equal_a_brute_force_rest_and_pick_the_separating_dims():
    rng = np.random.default_rng(9)
    d = 6
    x = rng.normal(scale=0.1, size=(300, d))
    labels = np.repeat([0, 1, 2], 100)
    x[labels == 0, 1] += 1.0  # class 0 stands out on dim 1 only
    settings = MaskSettings(ratio_threshold=1.5, min_dims=1)
    keep = ovr_masks(ClassMoments.from_batch(x, labels, 3), settings)
    for c in range(3):
        mine, rest = x[labels == c], x[labels != c]
        xvar = 0.5 * (mine.var(axis=0) + rest.var(axis=0)) + 0.5 * (mine.mean(axis=0) - rest.mean(axis=0)) ** 2
        ratio = np.sqrt(xvar / (mine.std(axis=0) * rest.std(axis=0)))
        want = ratio >= 1.5
        if not want.any():
            want[np.argmax(ratio)] = True
        assert keep[c].tolist() == want.tolist()
    assert keep[0].tolist() == [False, True, False, False, False, False]


def test_ovr_predict_is_the_masked_cosine_argmax():
    rng = np.random.default_rng(10)
    x = normalize_rows(rng.normal(size=(30, 5)))
    t = normalize_rows(rng.normal(size=(4, 5)))
    keep = rng.random((4, 5)) < 0.6
    keep[:, 0] = True
    want = [np.argmax([(x[i] * keep[c]) @ (t[c] * keep[c]) / np.linalg.norm(x[i] * keep[c]) / np.linalg.norm(t[c] * keep[c])
                       for c in range(4)]) for i in range(30)]
    assert ovr_predict(x, t, keep).tolist() == want


def test_ovr_scores_leave_out_a_class_with_no_dims_and_are_uniform_without_evidence():
    x = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    t = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 1.0, 0.0]])
    keep = np.array([[True, False, False], [True, True, False], [False, False, False]])
    scores = ovr_scores(x, t, keep)
    assert scores[0, :2].tolist() == pytest.approx([1.0, 0.6])  # class 1 on dims 0-1: 0.6 / 1
    assert scores[0, 2] == -np.inf  # class 2 keeps no dim
    assert scores[1].tolist() == [0.0, 0.0, 0.0]  # item 1 has no weight on any class's dims
    assert ovr_predict(x, t, keep).tolist() == [0, 0]


# ---------- round robin ----------

@pytest.mark.parametrize("top_k", [None, 3])
def test_round_robin_equals_a_brute_force_all_play_all(top_k):
    rng = np.random.default_rng(11)
    n_classes, d = 6, 10
    x = normalize_rows(rng.normal(size=(60, d)))
    t = normalize_rows(rng.normal(size=(n_classes, d)))
    labels = rng.integers(0, n_classes, 60)
    masks = pair_masks(ClassMoments.from_batch(x, labels, n_classes), MaskSettings(1.05, 3))
    cos = x @ t.T
    candidates = None if top_k is None else np.sort(np.argsort(-cos, axis=1)[:, :top_k], axis=1)
    got = play_round_robin(x, t, masks, pair_coefficients(t, masks), cos, candidates)
    pairs = [(a, b) for a in range(n_classes) for b in range(a + 1, n_classes)]
    for i in range(60):
        entrants = list(range(n_classes)) if candidates is None else list(candidates[i])
        wins = {c: 0 for c in entrants}
        for a, b in pairs:
            if a in wins and b in wins:
                dims = masks[pairs.index((a, b))]
                ca = x[i, dims] @ t[a, dims] / np.linalg.norm(t[a, dims])
                cb = x[i, dims] @ t[b, dims] / np.linalg.norm(t[b, dims])
                wins[a if ca >= cb else b] += 1
        best = max(entrants, key=lambda c: (wins[c], cos[i, c], -c))
        assert got[i] == best, i
    coef = pair_coefficients(t, masks)
    assert play_round_robin(x, t, masks, coef, cos, candidates, pair_weights(t, masks, coef)).tolist() == got.tolist()


# ---------- cotrain's loop (core/rounds.fit_cotrain) over in-memory passes ----------

def _parts(fit):
    """A Fit's (scorers, facts)."""
    return fit.scorers, fit.facts


class _MemoryPasses:
    """core/fitting.Passes over arrays: `sample` is a fixed subset of the rows (or all of them)."""

    def __init__(self, xs, ts, sample_rows):
        self.xs, self.ts, self.rows, self.passes = xs, ts, sample_rows, 0

    def stats(self, labeller):
        self.passes += 1
        n = len(next(iter(self.xs.values())))
        return labeller(self.xs, {n: x @ self.ts[n].T for n, x in self.xs.items()}, np.full(n, -1))

    def sample(self):
        return {n: x[self.rows] for n, x in self.xs.items()}, np.full(len(self.rows), -1)


def _cotrain_problem(seed=7, per_class=60):
    from pairspark.core.fitting import FitContext

    rng = np.random.default_rng(seed)
    centres = np.eye(4)
    xa, truth = _blobs(rng, per_class, centres, 0.45)
    xb, _ = _blobs(rng, per_class, centres, 0.45)
    ts = {"a": normalize_rows(centres + 0.2), "b": normalize_rows(np.array([[1, 0, 0, 0], [0, 0.3, 1, 0], [0, 0, 1, 0.2], [0, 0, 0, 1]], float))}
    xs = {"a": xa, "b": xb}
    margins = {n: float(np.quantile(top_margin(xs[n] @ ts[n].T), 0.3)) for n in xs}
    return xs, ts, truth, FitContext(["a", "b"], ts, {}, margins, len(truth), 0.3)


def test_cotrain_stops_where_its_training_targets_repeat_without_a_pass_when_the_sample_is_every_item():
    from pairspark.core.rounds import cotrain_round, fit_cotrain

    xs, ts, truth, ctx = _cotrain_problem()
    passes = _MemoryPasses(xs, ts, np.arange(len(truth)))
    scorers, facts = _parts(fit_cotrain(passes, ctx))
    assert facts["converged"] and facts["passes"] == 0 == passes.passes and facts["period"] >= 1
    # replaying the loop by hand: the targets after `rounds` rounds are the ones `period` rounds before
    current, thresholds, states = None, [ctx.margins["a"], ctx.margins["b"]], []
    cos = {n: xs[n] @ ts[n].T for n in xs}
    for _ in range(facts["rounds"] + 1):
        targets = cotrain_round(["a", "b"], xs, cos, current, thresholds)
        states.append([np.where(k, lab, -1).tolist() for lab, k in targets])
        current = {n: lda_scorer(LabelStats.from_labels(xs[n], lab, 4, k, with_scatter=True)) for n, (lab, k) in zip("ab", targets)}
        thresholds = [float(np.quantile(top_margin(current[n].scores(xs[n], cos[n])), 0.3)) for n in "ab"]
    assert states[-1] == states[-1 - facts["period"]] and states[-1] not in states[: -1 - facts["period"]]
    assert (scorers["b"].predict(xs["b"], cos["b"]) == truth).mean() > (cos["b"].argmax(axis=1) == truth).mean()


def test_cotrain_on_a_sample_ends_with_one_pass_that_fits_every_item():
    from pairspark.core.rounds import cotrain_round, fit_cotrain

    xs, ts, truth, ctx = _cotrain_problem(per_class=90)
    rows = np.arange(0, len(truth), 3)
    passes = _MemoryPasses(xs, ts, rows)
    scorers, facts = _parts(fit_cotrain(passes, ctx))
    assert facts["passes"] == 1 == passes.passes and facts["sample_items"] == len(rows) < len(truth)
    sample_only = fit_cotrain(_MemoryPasses({n: x[rows] for n, x in xs.items()}, ts, np.arange(len(rows))),
                                 ctx.__class__(**{**ctx.__dict__, "valid_items": len(rows)})).scorers
    cos_sample = {n: xs[n][rows] @ ts[n].T for n in xs}
    thresholds = [float(np.quantile(top_margin(sample_only[n].scores(xs[n][rows], cos_sample[n])), 0.3)) for n in "ab"]
    targets = cotrain_round(["a", "b"], xs, {n: xs[n] @ ts[n].T for n in xs}, sample_only, thresholds)
    for n, (lab, keep) in zip("ab", targets):
        want = lda_scorer(LabelStats.from_labels(xs[n], lab, 4, keep, with_scatter=True))
        np.testing.assert_allclose(scorers[n].weights, want.weights, rtol=1e-9, atol=1e-12)


def test_a_verified_row_trains_on_its_class_at_the_verified_weight_and_is_never_pseudo_labelled():
    from pairspark.core.fitting import VERIFIED_WEIGHT, training_stats
    from pairspark.core.rounds import cotrain_round

    x = normalize_rows(np.array([[1.0, 0.1], [0.1, 1.0], [0.9, 0.3]]))
    stats = training_stats(x, np.array([0, 1, 0]), np.array([True, True, False]), np.array([-1, 0, 1]), 2)
    # row 0 pseudo (class 0, weight 1); row 1 verified class 0 (its pseudo label 1 ignored); row 2 verified class 1
    assert stats.weight.tolist() == [1 + VERIFIED_WEIGHT, VERIFIED_WEIGHT]
    np.testing.assert_allclose(stats.sums[0], x[0] + VERIFIED_WEIGHT * x[1])
    np.testing.assert_allclose(stats.sums[1], VERIFIED_WEIGHT * x[2])
    cos = {"a": x @ np.eye(2), "b": x @ np.eye(2)}
    targets = cotrain_round(["a", "b"], {"a": x, "b": x}, cos, None, [9.0, 9.0], np.array([-1, 0, -1]))
    for label, keep in targets:  # row 1 agrees on class 1 in both views but is verified as 0
        assert label.tolist() == [0, 0, 0] and keep.tolist() == [True, True, True]


# ---------- selftrain (core/rounds.fit_selftrain): one view, kept only where its changes reproduce ----------

def test_reproducibility_is_the_share_of_changed_rows_both_halves_change_the_same_way():
    from pairspark.core.rounds import reproducibility

    base = np.array([0, 0, 0, 0])
    # rows 0-2 changed by one half or both; only row 0 the same way
    assert reproducibility(base, np.array([1, 0, 2, 0]), np.array([1, 2, 0, 0])) == pytest.approx(1 / 3)
    assert reproducibility(base, base.copy(), base.copy()) == 1.0


def test_selftrain_round_keeps_each_views_confident_answers_and_verified_rows():
    from pairspark.core.rounds import selftrain_round

    x = normalize_rows(np.array([[1.0, 0.0], [0.6, 0.5], [0.0, 1.0]]))
    cos = x @ np.eye(2)  # margins 1.0, ~0.13, 1.0
    (label, keep), = selftrain_round(["a"], {"a": x}, {"a": cos}, None, [0.5])
    assert label.tolist() == [0, 0, 1] and keep.tolist() == [True, False, True]
    (label, keep), = selftrain_round(["a"], {"a": x}, {"a": cos}, None, [0.5], np.array([-1, 1, -1]))
    assert label.tolist() == [0, 1, 1] and keep.tolist() == [True, True, True]


def _one_view(xs, ts, name):
    from pairspark.core.fitting import FitContext

    margins = {name: float(np.quantile(top_margin(xs[name] @ ts[name].T), 0.3))}
    return FitContext([name], {name: ts[name]}, {}, margins, len(xs[name]), 0.3)


def test_selftrain_keeps_what_reproduces_a_prompt_that_misses_its_cluster_is_repaired():
    from pairspark.core.rounds import fit_selftrain

    xs, ts, truth, _ = _cotrain_problem(per_class=120)
    ctx = _one_view(xs, ts, "b")  # view b's prompt for class 1 points at class 2's cluster
    scorers, facts = _parts(fit_selftrain(_MemoryPasses({"b": xs["b"]}, ts, np.arange(len(truth))), ctx))
    fact = facts["views"]["b"]
    assert fact["trusted"] and fact["converged"] and np.median(fact["reproduced"]) >= 0.5
    cos = xs["b"] @ ts["b"].T
    assert (scorers["b"].predict(xs["b"], cos) == truth).mean() > (cos.argmax(axis=1) == truth).mean() + 0.05


def test_selftrain_falls_back_to_base_where_its_changes_do_not_reproduce():
    from pairspark.core.rounds import fit_selftrain

    rng = np.random.default_rng(3)
    xs = {"a": normalize_rows(rng.normal(size=(400, 12)))}  # no cluster structure: any change is drift
    ts = {"a": normalize_rows(rng.normal(size=(5, 12)))}
    scorers, facts = _parts(fit_selftrain(_MemoryPasses(xs, ts, np.arange(400)), _one_view(xs, ts, "a")))
    assert not facts["views"]["a"]["trusted"] and np.median(facts["views"]["a"]["reproduced"]) < 0.5
    cos = xs["a"] @ ts["a"].T
    np.testing.assert_array_equal(scorers["a"].predict(xs["a"], cos), cos.argmax(axis=1))


def test_selftrain_on_a_sample_refits_a_kept_view_in_one_pass_over_every_item():
    from pairspark.core.rounds import fit_selftrain

    xs, ts, truth, _ = _cotrain_problem(per_class=150)
    passes = _MemoryPasses({"b": xs["b"]}, ts, np.arange(0, len(truth), 2))
    scorers, facts = _parts(fit_selftrain(passes, _one_view(xs, ts, "b")))
    assert facts["views"]["b"]["trusted"] and facts["passes"] == 1 == passes.passes
    cos = xs["b"] @ ts["b"].T
    assert (scorers["b"].predict(xs["b"], cos) == truth).mean() > (cos.argmax(axis=1) == truth).mean() + 0.05


# ---------- the default's rule on small catalogs (docs/METHOD.md, "Small catalogs") ----------

def _cotrain_accuracy(xs, ts, truth):
    """(base accuracy, cotrain accuracy, cotrain's share right on class 2) per view, the sample every item."""
    from pairspark.core.fitting import FitContext
    from pairspark.core.rounds import fit_cotrain

    margins = {n: float(np.quantile(top_margin(xs[n] @ ts[n].T), 0.3)) for n in xs}
    scorers, _ = _parts(fit_cotrain(_MemoryPasses(xs, ts, np.arange(len(truth))), FitContext(list(xs), ts, {}, margins, len(truth), 0.3)))
    out = {}
    for n in xs:
        cos = xs[n] @ ts[n].T
        got = scorers[n].predict(xs[n], cos)
        out[n] = ((cos.argmax(axis=1) == truth).mean(), (got == truth).mean(), (got[truth == 2] == 2).mean())
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cotrain_learns_on_a_balanced_catalog_with_fewer_items_than_dims(seed):
    """40 items, 48 dims: a lightly shrunk covariance would reproduce round 1's pseudo-labels,
    mistakes included (the old rule stayed at or below base on seeds 0 and 2); shrunk by
    min(1, D / n) it learns the direction every item shares and the prompts miss."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 48)) * 0.6
    truth = np.repeat(np.arange(4), 10)
    offset = rng.normal(size=48)
    xs = {v: normalize_rows(offset + centres[truth] + rng.normal(size=(40, 48))) for v in "ab"}
    ts = {v: normalize_rows(centres + 0.8 * rng.normal(size=(4, 48))) for v in "ab"}
    for view, (base, cotrain, _) in _cotrain_accuracy(xs, ts, truth).items():
        assert cotrain >= base + 0.04, (view, base, cotrain)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cotrain_keeps_a_rare_class_one_view_cannot_see_and_teaches_it_to_that_view(seed):
    """Classes of 60, 30 and 12 items; view b's prompt for class 2 lies on a dim no item has, and
    b calls class 2's items class 0. View a sees class 2: it keeps its own confident answers, and
    b learns the class from them."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(3), [60, 30, 12])
    centres = np.eye(3, 6)
    xs = {v: normalize_rows(centres[truth] + 0.35 * rng.normal(size=(len(truth), 6))) for v in "ab"}
    ts = {"a": normalize_rows(centres + 0.1),
          "b": normalize_rows(np.array([[1, 0, 0.4, 0, 0, 0], [0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1]], float))}
    got = _cotrain_accuracy(xs, ts, truth)
    assert got["a"][2] >= 0.9 and got["b"][2] >= 0.9  # b's base: at most 1 of the 12
    assert got["b"][1] > got["b"][0] + 0.1


# ---------- label-shift EM (core/scorers.label_shift_priors, core/em.fit_labelshift) ----------

def test_label_shift_priors_reach_the_class_shares_the_posteriors_imply():
    from pairspark.core.scorers import label_shift_priors

    # one-hot posteriors: the priors are the class shares, at once
    one_hot = np.eye(3)[[0, 0, 0, 1, 2, 0]]
    priors, _, converged = label_shift_priors(one_hot)
    assert converged
    np.testing.assert_allclose(priors, [4 / 6, 1 / 6, 1 / 6])
    # soft posteriors from a 3:1 mixture of two well-separated Gaussians, EM's fixed point by hand:
    # pi = mean over items of pi * p / (pi . p)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1, 1, 3000), rng.normal(1, 1, 1000)])
    like = np.stack([np.exp(-0.5 * (x + 1) ** 2), np.exp(-0.5 * (x - 1) ** 2)], axis=1)
    probs = like / like.sum(axis=1, keepdims=True)
    priors, iterations, converged = label_shift_priors(probs)
    assert converged and iterations > 1
    post = probs * priors / (probs * priors).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(post.mean(axis=0), priors, atol=1e-7)
    assert abs(priors[0] - 0.75) < 0.03


def test_label_shift_priors_count_a_verified_row_as_its_class():
    from pairspark.core.scorers import label_shift_priors

    probs = np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.1]])
    fixed = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]])  # row 2 is known to be class 1
    priors, _, _ = label_shift_priors(probs, fixed)
    # the free rows are uninformative (their posteriors follow the priors): the fixed point of
    # pi = (2 pi + [0, 1]) / 3 is [0, 1]
    np.testing.assert_allclose(priors, [0.0, 1.0], atol=1e-6)


def test_labelshift_on_a_sample_ends_with_one_pass_whose_priors_are_every_items_mean_posterior():
    from pairspark.core.em import fit_labelshift
    from pairspark.core.fitting import FitContext
    from pairspark.core.scorers import LABELSHIFT_TEMPERATURE, label_shift_priors

    rng = np.random.default_rng(3)
    t = np.eye(3, 5)
    truth = np.repeat(np.arange(3), [150, 40, 10])
    xs = {"a": normalize_rows(t[truth] + 0.6 * rng.normal(size=(200, 5)))}
    ts = {"a": normalize_rows(t + 0.05)}
    rows = np.arange(0, 200, 2)
    scorers, facts = _parts(fit_labelshift(_MemoryPasses(xs, ts, rows), FitContext(["a"], ts, {}, {"a": 0.0}, 200, 0.3)))
    assert facts["passes"] == 1 and facts["converged"]
    probs = softmax(LABELSHIFT_TEMPERATURE * (xs["a"] @ ts["a"].T))
    sample_priors, _, _ = label_shift_priors(probs[rows])
    post = probs * sample_priors / (probs * sample_priors).sum(axis=1, keepdims=True)
    want = post.mean(axis=0)
    np.testing.assert_allclose(np.exp(scorers["a"].bias) / 3, want, rtol=1e-9)
    cos = xs["a"] @ ts["a"].T
    np.testing.assert_array_equal(scorers["a"].predict(xs["a"], cos), (probs * want).argmax(axis=1))


def test_calibrations_second_opinion_targets_never_take_a_views_own_answer_where_the_views_disagree():
    from pairspark.core.targets import second_opinion_targets

    labels = [np.array([0, 1, 2, 0]), np.array([0, 2, 1, 1])]
    margins = [np.array([5.0, 0.1, 3.0, 0.2]), np.array([1.0, 4.0, 0.1, 0.1])]
    (label_a, keep_a), (label_b, keep_b) = second_opinion_targets(labels, margins, [1.0, 1.0])
    # item 0 agreed; item 1: b confident -> a's target is 2; item 2: a confident -> b's target is 2; item 3: none
    assert keep_a.tolist() == [True, True, False, False] and label_a[:2].tolist() == [0, 2]
    assert keep_b.tolist() == [True, False, True, False] and label_b[[0, 2]].tolist() == [0, 2]


# ---------- held-out scores for calibration (core/held_out.held_out_scores) ----------

def test_held_out_scores_equal_a_discriminant_refitted_from_scratch_without_each_fold():
    from pairspark.core.fitting import mean_stats, training_stats
    from pairspark.core.held_out import CALIBRATION_FOLDS, calibration_folds, held_out_scores
    from pairspark.core.rounds import cotrain_round, train_until_repeat

    xs, ts, truth, ctx = _cotrain_problem(seed=3)
    names = ["a", "b"]
    cos = {n: xs[n] @ ts[n].T for n in names}
    verified = np.full(len(truth), -1)
    verified[[0, 70, 140]] = truth[[0, 70, 140]]  # a verified row is held out like any other
    trained = train_until_repeat(names, xs, cos, verified, [ctx.margins[n] for n in names], cotrain_round, 0.3)
    held = held_out_scores(names, xs, cos, verified, trained.cycle_stats, trained.cycle_targets)
    folds = calibration_folds(len(truth))
    assert sorted(np.bincount(folds).tolist()) == [24] * CALIBRATION_FOLDS
    for v, n in enumerate(names):
        for k in range(CALIBRATION_FOLDS):
            rest, fold = folds != k, folds == k
            parts = [training_stats(xs[n][rest], t[v][0][rest], t[v][1][rest], verified[rest], 4, with_scatter=True)
                     for t in trained.cycle_targets]
            want = lda_scorer(mean_stats(parts)).scores(xs[n][fold], cos[n][fold])
            np.testing.assert_allclose(held[n][fold], want, rtol=1e-7, atol=1e-7)
    # the model that trained on the rows is surer of them than the held-out ones are
    full = trained.model["a"].scores(xs["a"], cos["a"])
    assert np.median(top_margin(full)) > np.median(top_margin(held["a"]))


def test_label_stats_less_a_part_empty_a_class_left_with_no_weight():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    whole = LabelStats.from_labels(x, np.array([0, 1, 1]), 2, with_scatter=True)
    rest = whole - LabelStats.from_labels(x[:1], np.array([0]), 2, with_scatter=True)
    assert rest.weight.tolist() == [0.0, 2.0] and rest.sums[0].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(rest.scatter, x[1:].T @ x[1:])


# ---------- verified labels start the rounds (core/labelled.labelled_start; docs/METHOD.md, "Verified labels") ----------

class _LabelledPasses(_MemoryPasses):
    """_MemoryPasses whose rows carry verified class indices (-1 for none); the sample is every row."""

    def __init__(self, xs, ts, verified):
        super().__init__(xs, ts, np.arange(len(verified)))
        self.verified = verified

    def stats(self, labeller):
        self.passes += 1
        return labeller(self.xs, {n: x @ self.ts[n].T for n, x in self.xs.items()}, self.verified)

    def sample(self):
        return dict(self.xs), self.verified


def _labelled_problem(prompts, per_class=80, labels_per_class=3, labelled=(0, 1, 2, 3), seed=0, dim=8, spread=0.3):
    """4 Gaussian classes on the first 4 of `dim` dims; prompts: (4, dim) rows; the first
    labels_per_class items of each class in `labelled` are verified."""
    rng = np.random.default_rng(seed)
    centres = np.eye(4, dim)
    x, truth = _blobs(rng, per_class, centres, spread)
    verified = np.full(len(truth), -1)
    for c in labelled:
        rows = np.flatnonzero(truth == c)[:labels_per_class]
        verified[rows] = c
    return x, normalize_rows(np.asarray(prompts, float)), truth, verified


def _lda_on_labels(x, cos, verified, n_classes=4):
    rows = verified >= 0
    return lda_scorer(LabelStats.from_labels(x, np.maximum(verified, 0), n_classes, rows, with_scatter=True)).predict(x, cos)


def test_labelled_start_follows_good_prompts_and_the_labels_where_the_prompts_are_wrong():
    from pairspark.core.labelled import labelled_start

    good = np.eye(4, 8) + 0.05
    x, t, truth, verified = _labelled_problem(good)
    cos = x @ t.T
    rest = verified < 0
    start = labelled_start(x, cos, verified).argmax(axis=1)
    base = cos.argmax(axis=1)
    # good prompts and 3 labels per class: the start is at least as right as either source alone
    assert (start == truth)[rest].mean() >= max((base == truth)[rest].mean(), (_lda_on_labels(x, cos, verified) == truth)[rest].mean()) - 0.01
    # every prompt on the wrong cluster (a cyclic shift): the zero-shot evidence is flattened, the labels decide
    x, t, truth, verified = _labelled_problem(np.roll(np.eye(4, 8), 1, axis=0) + 0.05)
    cos = x @ t.T
    rest = verified < 0
    assert (cos.argmax(axis=1) == truth)[rest].mean() < 0.05
    assert (labelled_start(x, cos, verified).argmax(axis=1) == truth)[rest].mean() >= 0.9


def test_labelled_start_keeps_the_zero_shot_evidence_of_a_class_without_labels():
    from pairspark.core.labelled import labelled_start

    x, t, truth, verified = _labelled_problem(np.eye(4, 8) + 0.05, labelled=(0, 1, 2))
    cos = x @ t.T
    start = labelled_start(x, cos, verified).argmax(axis=1)
    assert (start[truth == 3] == 3).mean() >= 0.9  # the labels' discriminant cannot name class 3; its prompt still does
    assert labelled_start(x, cos, np.where(truth == 0, verified, -1)) is None  # one labelled class: nothing to fit


def test_cotrain_with_few_verified_labels_beats_both_the_prompts_and_a_discriminant_on_the_labels_alone():
    from pairspark.core.fitting import FitContext
    from pairspark.core.rounds import fit_cotrain

    # both views' prompts for classes 1 and 2 swapped: co-training alone cannot see the mistake
    wrong = np.eye(4, 8)[[0, 2, 1, 3]] + 0.05
    xa, t, truth, verified = _labelled_problem(wrong, seed=1)
    xb, _, _, _ = _labelled_problem(wrong, seed=2)
    xs, ts = {"a": xa, "b": xb}, {"a": t, "b": t}
    margins = {n: float(np.quantile(top_margin(xs[n] @ t.T), 0.3)) for n in xs}
    ctx = FitContext(["a", "b"], ts, {}, margins, len(truth), 0.3)
    rest = verified < 0
    unlabelled = fit_cotrain(_MemoryPasses(xs, ts, np.arange(len(truth))), ctx).scorers
    labelled = fit_cotrain(_LabelledPasses(xs, ts, verified), ctx).scorers
    for n in xs:
        cos = xs[n] @ t.T
        right = (labelled[n].predict(xs[n], cos) == truth)[rest].mean()
        assert (unlabelled[n].predict(xs[n], cos) == truth)[rest].mean() < 0.6
        assert right >= 0.95 and right >= (_lda_on_labels(xs[n], cos, verified) == truth)[rest].mean()


def test_selftrain_with_verified_labels_is_kept_without_the_halves_and_repairs_a_wrong_prompt():
    from pairspark.core.rounds import fit_selftrain

    x, t, truth, verified = _labelled_problem(np.eye(4, 8)[[0, 2, 1, 3]] + 0.05)
    xs, ts = {"a": x}, {"a": t}
    fit = fit_selftrain(_LabelledPasses(xs, ts, verified), _one_view(xs, ts, "a"))
    fact = fit.facts["views"]["a"]
    assert fact["trusted"] and fact["trusted_by"] == "verified labels" and fact["reproduced"] == []
    rest = verified < 0
    assert (fit.scorers["a"].predict(x, x @ t.T) == truth)[rest].mean() >= 0.95


def test_selftrain_without_labels_needs_every_split_to_reproduce_not_most(monkeypatch):
    """A self-training run that drifts the same way on most halves (reproducibility above 0.5 on
    4 of 5 splits, the median the old rule read) but not on one is not trusted."""
    from pairspark.core import rounds

    xs, ts, truth, _ = _cotrain_problem(per_class=120)
    values = iter([0.9, 0.9, 0.45, 0.9, 0.9])
    monkeypatch.setattr(rounds, "reproducibility", lambda *a: next(values))
    fit = rounds.fit_selftrain(_MemoryPasses({"b": xs["b"]}, ts, np.arange(len(truth))), _one_view(xs, ts, "b"))
    fact = fit.facts["views"]["b"]
    assert np.median(fact["reproduced"]) >= 0.5 and not fact["trusted"] and fact["trusted_by"] == "reproducibility"
    cos = xs["b"] @ ts["b"].T
    np.testing.assert_array_equal(fit.scorers["b"].predict(xs["b"], cos), cos.argmax(axis=1))


class _Fixed:
    """A stand-in discriminant that answers fixed classes (the guard reads only predict)."""

    def __init__(self, answers):
        self.answers = np.asarray(answers)

    def predict(self, x, cosines):
        return self.answers


def test_the_stronger_view_guard_reads_nothing_where_the_views_agree_and_else_sends_the_view_that_held_on_to_base():
    from pairspark.core.rounds import COTRAIN_GUARD_AGREEMENT, stronger_view_guard

    rng = np.random.default_rng(0)
    n, c = 400, 6
    image, text = rng.normal(size=(n, c)), rng.normal(size=(n, c))
    best_image, best_text = image.argmax(axis=1), text.argmax(axis=1)
    xs = {"image": np.zeros((n, 2)), "text": np.zeros((n, 2))}
    margins = {"image": 0.0, "text": 0.0}
    # views that agree on 3 rows of 4: nothing is read beyond the agreement
    agreeing = text.copy()
    agreeing[: 3 * n // 4] = image[: 3 * n // 4]
    model = {"image": _Fixed(best_text), "text": _Fixed(best_image)}
    fallback, facts = stronger_view_guard(["image", "text"], xs, {"image": image, "text": agreeing}, model, margins)
    assert fallback == [] and set(facts) == {"agreement"} and facts["agreement"] >= COTRAIN_GUARD_AGREEMENT
    # views that mostly disagree (random answers: ~1/6 agree): text kept its own answers, image took text's
    model = {"image": _Fixed(best_text), "text": _Fixed(best_text)}
    fallback, facts = stronger_view_guard(["image", "text"], xs, {"image": image, "text": text}, model, margins)
    assert facts["agreement"] == pytest.approx(np.mean(best_image == best_text), abs=1e-4)
    assert facts["agreement"] < COTRAIN_GUARD_AGREEMENT
    assert facts["kept"]["text"] == 1.0 and facts["kept"]["image"] < 0.3 and fallback == ["text"]
    # only the confident answers count (margin at or above the view's threshold); a tie sends none back
    model = {"image": _Fixed(best_image), "text": _Fixed(best_text)}
    fallback, facts = stronger_view_guard(["image", "text"], xs, {"image": image, "text": text}, model,
                                          {"image": np.inf, "text": np.inf})
    assert facts["kept"] == {"image": 0.0, "text": 0.0} and fallback == []
