"""core/calibration.py against hand-computed cases and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pairspark.core import calibration as cal


def test_ece_of_a_hand_computed_case():
    # bins of width 1/15: 0.95 and 1.0 share the last bin, 0.55 and 0.58 bin 8 (0.6 would open bin 9), 0.1 bin 1
    conf = np.array([0.95, 1.0, 0.55, 0.58, 0.1])
    right = np.array([True, False, True, True, False])
    table = cal.reliability(conf, right)
    assert cal.bin_index(np.array([0.6]))[0] == 9
    assert table["items"][14] == 2 and table["items"][8] == 2 and table["items"][1] == 1 and sum(table["items"]) == 5
    # last bin |0.5 - 0.975|, bin 8 |1 - 0.565|, bin 1 |0 - 0.1|, weighted 2/5, 2/5, 1/5
    want = 2 / 5 * 0.475 + 2 / 5 * 0.435 + 1 / 5 * 0.1
    assert cal.expected_calibration_error(table) == pytest.approx(want)
    assert cal.expected_calibration_error(cal.reliability(np.zeros(0), np.zeros(0, bool))) is None


def test_fit_temperature_finds_the_brute_force_minimum_of_the_answers_log_loss():
    """The fitted T minimises the weighted binary log-loss of 'the answer is right' under the
    answer's probability (a share in [0, 1] counts as a soft outcome); a row whose answer is scored
    -inf is left out; nothing to fit on gives 1.0."""
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(200, 4)) * 3
    answers = scores.argmax(axis=1)
    right = np.where(rng.random(200) < 0.7, 1.0, np.where(rng.random(200) < 0.5, 0.0, 0.5))
    weights = rng.uniform(0.5, 2.0, 200)
    grid = np.exp(np.linspace(np.log(0.05), np.log(50), 4001))

    def loss(t):  # log p and log(1 - p) each from their own sum of exponentials (no rounding of p to 1)
        z = scores / t
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        rows = np.arange(200)
        log_all = np.log(e.sum(axis=1))
        log_p = z[rows, answers] - log_all
        log_rest = np.log(e.sum(axis=1) - e[rows, answers] + 1e-300) - log_all
        return -np.sum(weights * (right * log_p + (1 - right) * log_rest)) / weights.sum()

    best = grid[np.argmin([loss(t) for t in grid])]
    assert cal.fit_temperature(scores, answers, right, weights) == pytest.approx(best, rel=2e-3)
    disabled = np.vstack([scores, np.full((1, 4), -np.inf)])
    with_dead_row = cal.fit_temperature(disabled, np.append(answers, 0), np.append(right, 1.0), np.append(weights, 1.0))
    assert with_dead_row == pytest.approx(cal.fit_temperature(scores, answers, right, weights), rel=1e-9)
    assert cal.fit_temperature(np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros(0)) == 1.0


def test_a_second_opinion_that_is_often_wrong_lowers_the_answers_probability_to_its_rate():
    """Noisy targets (they confirm the answer 60% of the time, else name the class the scores rank
    last): the answer's mean probability comes out near 0.6. The multi-class likelihood of the
    targets would also have to give those last-ranked classes probability, and lands far lower."""
    rng = np.random.default_rng(3)
    n = 4000
    scores = rng.normal(size=(n, 5))
    scores[:, 0] += 4.0  # every answer is class 0, by a wide margin
    answers = scores.argmax(axis=1)
    confirms = rng.random(n) < 0.6
    targets = np.where(confirms, answers, scores.argmin(axis=1))
    rows = np.arange(n)
    t = cal.fit_temperature(scores, answers, (targets == answers).astype(float))
    assert abs(cal.probabilities(scores, t)[rows, answers].mean() - confirms.mean()) < 0.04

    def multiclass_nll(temp):
        z = scores / temp
        z = z - z.max(axis=1, keepdims=True)
        return -np.mean(z[rows, targets] - np.log(np.exp(z).sum(axis=1)))

    grid = np.exp(np.linspace(np.log(0.1), np.log(100), 2001))
    multi = grid[np.argmin([multiclass_nll(g) for g in grid])]
    assert cal.probabilities(scores, multi)[rows, answers].mean() < confirms.mean() - 0.1


def test_probabilities_keep_the_argmax_and_give_a_disabled_class_zero():
    scores = np.array([[2.0, 1.0, -np.inf], [0.0, 3.0, 1.0]])
    probs = cal.probabilities(scores, 0.5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert probs[0, 2] == 0.0 and probs.argmax(axis=1).tolist() == [0, 1]
    np.testing.assert_allclose(probs[0, :2], np.exp([4.0, 2.0]) / np.exp([4.0, 2.0]).sum())


def test_top_k_is_sorted_ties_to_the_lower_class_and_capped_by_the_classes():
    probs = np.array([[0.2, 0.5, 0.3], [0.4, 0.2, 0.4]])
    idx, val = cal.top_k(probs, 2)
    assert idx.tolist() == [[1, 2], [0, 2]] and val.tolist() == [[0.5, 0.3], [0.4, 0.4]]
    assert cal.top_k(probs, 10)[0].shape == (2, 3)


@pytest.mark.parametrize("classes, k", [(5, 1), (5, 3), (50, 3), (300, 10)])
def test_top_k_equals_a_full_stable_sort_with_many_ties(classes, k):
    rng = np.random.default_rng(classes)
    probs = np.round(rng.random((500, classes)), 1)  # ten distinct values: ties everywhere, at the k-th place too
    want = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    idx, val = cal.top_k(probs, k)
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_array_equal(val, np.take_along_axis(probs, want, axis=1))


def test_selective_accuracy_and_coverage():
    conf = np.array([0.96, 0.91, 0.85, 0.3])
    right = np.array([True, False, True, True])
    got = cal.selective(conf, right)
    assert got["0.9"] == {"coverage": 0.5, "accuracy": 0.5, "items": 2}
    assert got["0.95"] == {"coverage": 0.25, "accuracy": 1.0, "items": 1}
    assert got["0.5"]["accuracy"] == pytest.approx(2 / 3)
    assert cal.selective(np.array([0.1]), np.array([True]))["0.5"]["accuracy"] is None


def test_auroc_equals_the_share_of_right_wrong_pairs_ranked_correctly():
    rng = np.random.default_rng(1)
    conf = rng.integers(0, 5, 40) / 4.0  # many ties
    right = rng.random(40) < 0.6
    pairs = [(a, b) for a, b in itertools.product(conf[right], conf[~right])]
    want = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs])
    assert cal.auroc(conf, right) == pytest.approx(want)
    assert cal.auroc(conf, np.ones(40, bool)) is None


def test_answer_scores_keep_a_scored_methods_own_and_lift_a_winner_just_above_base():
    from pairspark.core.calibration import answer_scores

    own = np.array([[0.1, 0.5, 0.2]])
    assert answer_scores(np.array([1]), own, own * 0) is own
    cos = np.array([[0.30, 0.50, 0.20], [0.9, 0.1, 0.0]])
    lifted = answer_scores(np.array([2, 0]), None, cos)
    assert lifted[0, 2] > 0.5 and lifted[0, 2] == np.nextafter(0.5, 1) and lifted[0, :2].tolist() == [0.30, 0.50]
    assert lifted.argmax(axis=1).tolist() == [2, 0] and lifted[1].tolist()[1:] == [0.1, 0.0]


def test_top_k_led_by_the_answer_puts_it_first_even_on_a_tie_it_would_lose():
    probs = np.array([[0.4, 0.4, 0.2], [0.1, 0.6, 0.3]])
    index, p = cal.top_k(probs, 2, first=np.array([1, 1]))
    assert index.tolist() == [[1, 0], [1, 2]] and p.tolist() == [[0.4, 0.4], [0.6, 0.3]]
    assert cal.top_k(probs, 2)[0].tolist() == [[0, 1], [1, 2]]  # without: the tie goes to the lower index


def test_the_fitted_loss_is_log_softmax_of_the_answer_bit_for_bit():
    from pairspark.core import calibration
    from pairspark.core.scorers import log_softmax

    rng = np.random.default_rng(3)
    scores = rng.normal(size=(500, 40)) * 3
    scores[:5, 7] = -np.inf  # a class scored -inf (probability 0)
    answers = rng.integers(0, 40, 500)
    answers[:5] = 0
    right = (rng.random(500) < 0.6).astype(float)
    weights = rng.random(500) + 0.5
    for log_t in (-3.0, 0.0, 0.7, 4.0):
        logp = log_softmax(scores / np.exp(log_t))[np.arange(500), answers]
        log_not = np.log(-np.expm1(np.minimum(logp, -1e-300)))
        want = float(-(weights * (right * logp + (1 - right) * log_not)).sum() / weights.sum())
        assert calibration._mean_nll(scores, answers, right, weights, log_t) == want


def test_a_fit_over_many_classes_uses_an_even_subset_of_rows_with_every_weight_group_kept(monkeypatch):
    from pairspark.core import calibration

    weights = np.r_[np.full(900, 0.02), np.ones(100)]  # second opinion, then verified labels
    rows, w = calibration.fit_rows(weights, 100)
    assert len(rows) <= 102 and np.all(np.diff(rows) > 0)
    assert abs(w[weights[rows] == 1.0].sum() - 100) < 1e-9 and abs(w[weights[rows] == 0.02].sum() - 18) < 1e-9
    assert calibration.fit_rows(weights, 1000)[0] is None
    # under the cell budget a fit is the fit on every row; above it, on the subset, close to it
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(4000, 50))
    answers = scores.argmax(axis=1)
    right = (rng.random(4000) < 0.7).astype(float)
    whole = calibration.fit_temperature(scores, answers, right)
    monkeypatch.setattr(calibration, "CALIBRATION_CELLS", 1000 * 50)
    sub = calibration.fit_temperature(scores, answers, right)
    assert sub != whole and abs(np.log(sub / whole)) < 0.1
    picked, pw = calibration.fit_rows(np.ones(4000), 1000)
    assert sub == calibration.fit_temperature(scores[picked], answers[picked], right[picked], pw)
