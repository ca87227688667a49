"""Confidence: per-class probabilities for a view's answer, and how well they are calibrated.

A method's per-class scores become probabilities softmax(scores / T), one temperature T per view
and method, fitted at fit time on the driver's sample (core/confidence.calibrate) so that the
probability of each answer predicts whether a second opinion confirms it: the other view's
zero-shot answer, the view's own confident answers with one view, and verified labels where
there are some. Temperature scaling keeps each item's ranking of classes, so the answer stays the
argmax, and a single number per (view, method) fits in the model's metadata. docs/METHOD.md,
"Confidence", has what was measured and what was tried.

Also here: the calibration metrics evaluate and scripts/compare report, written once so that
both agree with a hand-computed case (tests/test_calibration.py): expected calibration error over
equal-width bins, accuracy and coverage above confidence thresholds, AUROC of confidence as a
right-vs-wrong ranking. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from pairspark.core.scorers import log_softmax

ECE_BINS = 15
SELECTIVE_THRESHOLDS = (0.5, 0.8, 0.9, 0.95)
# the temperature is searched in [T_MIN, T_MAX] (log scale, golden section): scores range from
# cosines (differences ~0.01: T ~ 0.01) to discriminant log-likelihoods (differences ~100)
T_MIN, T_MAX = 1e-4, 1e4
# Each of the ~80 evaluations of a temperature's loss reads rows x classes scores; above this many
# the fit uses an even subset of the rows, weighted to the same totals (fit_rows): a sample of
# 10,000 rows is fitted whole up to 419 classes, on 419 rows at 10,000 classes (the temperature
# fits were 85 of a 152 s run there, a 1-parameter fit that 400 rows pin down).
CALIBRATION_CELLS = 2**22


def probabilities(scores: np.ndarray, temperature: float) -> np.ndarray:
    """(n, C) softmax(scores / temperature); a class scored -inf gets probability 0."""
    scores = np.asarray(scores, np.float64)
    if scores.shape[0] == 0:
        return scores.copy()
    return np.exp(log_softmax(scores / temperature))


def _mean_nll(scores: np.ndarray, answers: np.ndarray, right: np.ndarray, weights: np.ndarray, log_t: float) -> float:
    """Weighted mean binary log-loss of `right` (in [0, 1]) under p = softmax(scores / T)[answer]."""
    # log_softmax(scores / T)[row, answer], the same operations in place: only the answer's column
    # is kept, so one (n, C) array is made per evaluation instead of four (the C-wide part of the
    # temperature fits, 80 evaluations each: 2.5x faster at 1,000 classes, the same bits)
    z = scores / np.exp(log_t)
    np.subtract(z, np.max(z, axis=1, keepdims=True), out=z)
    answer = z[np.arange(len(answers)), answers]
    np.exp(z, out=z)
    logp = answer - np.log(np.sum(z, axis=1))
    log_not = np.log(-np.expm1(np.minimum(logp, -1e-300)))  # log(1 - p), finite where p rounds to 1
    return float(-(weights * (right * logp + (1 - right) * log_not)).sum() / weights.sum())


def fit_temperature(scores: np.ndarray, answers: np.ndarray, right: np.ndarray,
                    weights: np.ndarray | None = None) -> float:
    """The T whose probability of each row's answer, softmax(scores / T)[answer], best predicts
    whether the answer is right (`right`: 1, 0, or a share in between), by the weighted mean binary
    log-loss: the confidence is a claim about the answer only, so only the answer's probability is
    fitted (a multi-class likelihood would also fit the probability of the class a second opinion
    names when it disagrees, and a noisy second opinion then flattens every probability). Golden
    section over log T in [T_MIN, T_MAX]; 1.0 when there is nothing to fit on."""
    scores = np.asarray(scores, np.float64)
    answers = np.asarray(answers, np.int64)
    right = np.asarray(right, np.float64)
    weights = np.ones(len(answers)) if weights is None else np.asarray(weights, np.float64)
    usable = np.isfinite(scores[np.arange(len(answers)), answers]) if len(answers) else np.zeros(0, bool)
    scores, answers, right, weights = scores[usable], answers[usable], right[usable], weights[usable]
    if len(answers) == 0 or weights.sum() <= 0:
        return 1.0
    rows, weights = fit_rows(weights, max(1, CALIBRATION_CELLS // max(scores.shape[1], 1)))
    if rows is not None:
        scores, answers, right = scores[rows], answers[rows], right[rows]
    lo, hi = np.log(T_MIN), np.log(T_MAX)
    ratio = (np.sqrt(5.0) - 1) / 2

    def loss(log_t: float) -> float:
        return _mean_nll(scores, answers, right, weights, log_t)

    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(80):  # the bracket shrinks by 0.618 each step: far below 1e-6 in log T
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return float(np.exp((lo + hi) / 2))


def fit_rows(weights: np.ndarray, budget: int) -> tuple[np.ndarray | None, np.ndarray]:
    """(rows, their weights) for a fit on at most ~`budget` rows: None and the weights when they
    fit; else, per distinct weight (labelled rows and the second opinion's weigh differently),
    evenly spaced rows in their share of the budget (at least one), each weighing as much as the
    rows it stands for, so that every group keeps its total weight."""
    n = len(weights)
    if n <= budget:
        return None, weights
    values, group = np.unique(weights, return_inverse=True)
    rows, out = [], []
    for g, value in enumerate(values):
        members = np.flatnonzero(group == g)
        take = max(1, int(round(budget * len(members) / n)))
        chosen = members[np.unique(np.linspace(0, len(members) - 1, take).round().astype(np.int64))]
        rows.append(chosen)
        out.append(np.full(len(chosen), value * len(members) / len(chosen)))
    order = np.argsort(np.concatenate(rows), kind="stable")
    return np.concatenate(rows)[order], np.concatenate(out)[order]


def answer_scores(answers: np.ndarray, scores: np.ndarray | None, base_cosines: np.ndarray) -> np.ndarray:
    """(n, C) per-class scores whose argmax is each row's answer, to calibrate a method's confidence.

    A scored method's own scores (its answer is their argmax). A method that only names a winner
    (the tournaments: most pairs are never played, so there is no per-class score) gets base's
    cosines with the winner's raised just above the best one: where the winner is base's answer
    nothing changes, and where it is not, its probability says how strongly base's own answer
    competes with it (about evenly: the item is a close call)."""
    if scores is not None:
        return scores
    lifted = np.array(base_cosines, dtype=np.float64)
    if len(lifted):
        rows = np.arange(len(lifted))
        lifted[rows, answers] = np.nextafter(lifted.max(axis=1), np.inf)
    return lifted


def top_k(probs: np.ndarray, k: int, first: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(n, min(k, C)) class indices by probability, highest first (ties: lower class index), and
    their probabilities; `first` (n,): each row's answer, placed first whatever the rounding of its
    probability (NAME_top[0] is NAME_class). O(n C) selection, then a sort of the k chosen per row:
    a full sort of every row costs 3x more at 1,000 classes (541 vs 176 ms per 10,000 rows)."""
    if first is not None and len(probs):
        rows = np.arange(len(probs))
        ranked = np.array(probs, dtype=np.float64)
        ranked[rows, first] = np.inf
        index, _ = top_k(ranked, k)
        return index, np.take_along_axis(probs, index, axis=1)
    n, classes = probs.shape
    k = min(int(k), classes)
    if k == classes or n == 0:
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return order, np.take_along_axis(probs, order, axis=1)
    kth = -np.partition(-probs, k - 1, axis=1)[:, k - 1 : k]  # each row's k-th largest value
    greater, equal = probs > kth, probs == kth
    # all classes above the k-th value, then the lowest-index ones equal to it until k are chosen
    chosen = greater | (equal & (np.cumsum(equal, axis=1) <= k - greater.sum(axis=1, keepdims=True)))
    index = np.nonzero(chosen)[1].reshape(n, k)  # ascending class index within each row
    order = np.argsort(-np.take_along_axis(probs, index, axis=1), axis=1, kind="stable")
    index = np.take_along_axis(index, order, axis=1)
    return index, np.take_along_axis(probs, index, axis=1)


def bin_index(confidence: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Equal-width bins over [0, 1]: bin b holds [b/bins, (b+1)/bins), the last one also 1.0."""
    return np.clip(np.floor(np.asarray(confidence, np.float64) * bins).astype(np.int64), 0, bins - 1)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> dict[str, list]:
    """Per bin: items, mean confidence and accuracy (None for an empty bin)."""
    idx = bin_index(confidence, bins)
    count = np.bincount(idx, minlength=bins)
    conf_sum = np.bincount(idx, weights=np.asarray(confidence, np.float64), minlength=bins)
    right_sum = np.bincount(idx, weights=np.asarray(correct, np.float64), minlength=bins)
    return reliability_from_sums(count, conf_sum, right_sum)


def reliability_from_sums(count, conf_sum, right_sum) -> dict[str, list]:
    """The same from per-bin sums (how the Spark layer aggregates them)."""
    count = np.asarray(count, np.int64)
    return {"items": count.tolist(),
            "confidence": [float(c / n) if n else None for c, n in zip(conf_sum, count)],
            "accuracy": [float(r / n) if n else None for r, n in zip(right_sum, count)]}


def expected_calibration_error(table: dict[str, list]) -> float | None:
    """sum over bins of (items in bin / items) * |accuracy - mean confidence|; None for no item."""
    total = sum(table["items"])
    if total == 0:
        return None
    return float(sum(n / total * abs(a - c) for n, a, c in zip(table["items"], table["accuracy"], table["confidence"]) if n))


def selective(confidence: np.ndarray, correct: np.ndarray, thresholds=SELECTIVE_THRESHOLDS) -> dict[str, dict]:
    """Per threshold t: coverage (share of items with confidence >= t) and their accuracy (None
    when no item reaches t)."""
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, bool)
    out = {}
    for t in thresholds:
        kept = confidence >= t
        out[f"{t:g}"] = {"coverage": float(kept.mean()) if len(kept) else 0.0,
                         "accuracy": float(correct[kept].mean()) if kept.any() else None, "items": int(kept.sum())}
    return out


def auroc(confidence: np.ndarray, correct: np.ndarray) -> float | None:
    """Probability that a right answer has a higher confidence than a wrong one (ties count half);
    None without both kinds."""
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, bool)
    right, wrong = int(correct.sum()), int((~correct).sum())
    if right == 0 or wrong == 0:
        return None
    order = np.argsort(confidence, kind="stable")
    ranks = np.empty(len(confidence))
    sorted_conf = confidence[order]
    # average ranks over ties (1-based)
    _, first, counts = np.unique(sorted_conf, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[correct].sum() - right * (right + 1) / 2) / (right * wrong))
