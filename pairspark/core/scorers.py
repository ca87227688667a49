"""Methods that re-estimate the classes from the items themselves (no labels), pure numpy.

Each one is a scorer fitted from sufficient statistics that sum across partitions (LabelStats),
then applied per item: score_c(x) = x . weights_c + (x*x) . quad_c + bias_c
[+ prompt_weight * log_softmax(temperature * cos(x, t))_c]. Iterative methods run one pass over
the items per iteration, each pass labelling items with the previous iteration's scorer.

* centroid: class vector replaced by the unit mean of the items it wins (first from the confident
  base subset), re-assigned by cosine; a class that wins nothing keeps its prompt vector.
* gnb: Gaussian naive Bayes (per-class diagonal variance, class prior from counts) on the
  confident base subset.
* transductive: the core of TransCLIP-ZS (Zanella et al., NeurIPS 2024) without its kNN term:
  class Gaussians with one shared diagonal variance, soft assignments z ~ text prior^lambda *
  pi_c * N(x | mu_c, diag var), EM.
* cotrain: co-training of a linear discriminant (shared full covariance, shrunk towards its
  diagonal by min(1, D / n)) per view. Each view learns from the items whose two views agree, the
  items where it is confident itself (its top-2 score margin is outside its lowest min_margin
  share), with its own answer, and the items where only the *other* view is confident, with the
  other view's answer; both re-label and it repeats (the default; see docs/RESULTS.md). Its
  targets and the confident-margin rule: core/targets.py; its rounds: core/rounds.py.
* labelshift: base's probabilities with class priors re-estimated from the items by EM
  (Saerens et al. 2002) instead of assumed uniform: label shift, not a new class model.
* ovr: one-vs-rest masks: cosine to each class on the dims where the cross ratio of that class
  against all others passes the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pairspark.core import kernels
from pairspark.core.crossvar import cross_ratio
from pairspark.core.masks import MaskSettings, select_dims_block
from pairspark.core.stats import ClassMoments

# TransCLIP's text prior: softmax of CLIP's logit scale (100) times the cosines, weight 1.
TRANSDUCTIVE_TEMPERATURE = 100.0
TRANSDUCTIVE_PROMPT_WEIGHT = 1.0
# The discriminant's pooled covariance is shrunk towards its own diagonal by min(1, D / n), n the
# training weight: with n below a few D a lightly shrunk D x D covariance lets the discriminant
# reproduce any labelling it is given, mistakes included, so co-training stops at its first
# pseudo-labels (docs/METHOD.md, "Small catalogs"); at n >> D it fades (0.05 on full agnews).
# label-shift EM: base's probabilities at TransCLIP's text-prior temperature (CLIP's logit scale),
# priors iterated until none moves by more than the tolerance
LABELSHIFT_TEMPERATURE = TRANSDUCTIVE_TEMPERATURE
LABELSHIFT_TOLERANCE = 1e-8
LABELSHIFT_MAX_ITERATIONS = 10_000
DISABLED = -np.inf  # score of a class the method cannot estimate (no pseudo-labelled item)


def log_softmax(s: np.ndarray) -> np.ndarray:
    top = np.max(s, axis=1, keepdims=True)
    shifted = s - top
    return shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))


def softmax(s: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(s))


@dataclass(frozen=True)
class LabelStats:
    """Weighted sums over pseudo-labelled items of one view: everything the scorers need.

    weight (C,), sums (C, D), sumsq (C, D) per class; scatter (D, D) = sum of w x x^T over all
    labelled items, or (0, 0) when not collected. Plain sums: they merge by addition. Inputs are
    unit vectors (|x_j| <= 1), so float64 sums of squares lose nothing that matters here."""

    weight: np.ndarray
    sums: np.ndarray
    sumsq: np.ndarray
    scatter: np.ndarray

    @classmethod
    def empty(cls, n_classes: int, dim: int, with_scatter: bool = False) -> LabelStats:
        side = dim if with_scatter else 0
        return cls(np.zeros(n_classes), np.zeros((n_classes, dim)), np.zeros((n_classes, dim)), np.zeros((side, side)))

    @classmethod
    def from_weights(cls, x: np.ndarray, z: np.ndarray, with_scatter: bool = False) -> LabelStats:
        """Soft labels: z (n, C) >= 0, item i counts z[i, c] towards class c."""
        x = np.asarray(x, np.float64)
        z = np.asarray(z, np.float64)
        scatter = (x * z.sum(axis=1)[:, None]).T @ x if with_scatter else np.zeros((0, 0))
        return cls(z.sum(axis=0), z.T @ x, z.T @ (x * x), scatter)

    @classmethod
    def from_labels(cls, x: np.ndarray, labels: np.ndarray, n_classes: int, keep: np.ndarray | None = None,
                    with_scatter: bool = False) -> LabelStats:
        """Hard labels (ints in [0, C)); rows where `keep` is False are left out. One pass of a
        kernel for the per-class sums (sorting and copying the rows cost 536 ms per 21,811 x 768 rows
        and two views, the kernel 24 ms); the scatter is one symmetric product."""
        x = np.ascontiguousarray(x, np.float64)
        labels = np.asarray(labels, np.int64)
        keep = np.ones(len(labels), bool) if keep is None else np.asarray(keep, bool)
        if x.ndim != 2 or labels.shape != (len(x),) or keep.shape != labels.shape:
            raise ValueError(f"x must be (n, d), labels and keep (n,), got {x.shape}, {labels.shape}, {keep.shape}")
        out = cls.empty(n_classes, x.shape[1], with_scatter)
        if not keep.any():
            return out
        kept_labels = labels[keep]
        if kept_labels.min() < 0 or kept_labels.max() >= n_classes:
            raise ValueError(f"labels must lie in [0, {n_classes})")
        weight, sums, sumsq = kernels.class_sums(x, labels, keep, n_classes)
        out.weight[:], out.sums[:], out.sumsq[:] = weight, sums, sumsq
        if with_scatter:
            kept = x if keep.all() else x[keep]
            out.scatter[:] = kept.T @ kept
        return out

    def scaled(self, factor: float) -> LabelStats:
        return LabelStats(self.weight * factor, self.sums * factor, self.sumsq * factor, self.scatter * factor)

    def __add__(self, other: LabelStats) -> LabelStats:
        return LabelStats(self.weight + other.weight, self.sums + other.sums, self.sumsq + other.sumsq,
                          self.scatter + other.scatter)

    def __sub__(self, other: LabelStats) -> LabelStats:
        """These sums less a part of them (held-out fits). A class left with no weight (up to the
        sums' rounding) is emptied, so that it counts as untrained, not as a mean of rounding."""
        weight = self.weight - other.weight
        gone = weight <= 1e-9 * np.maximum(self.weight, 1.0)
        weight[gone] = 0.0
        sums, sumsq = self.sums - other.sums, self.sumsq - other.sumsq
        sums[gone], sumsq[gone] = 0.0, 0.0
        return LabelStats(weight, sums, sumsq, self.scatter - other.scatter)

    @property
    def means(self) -> np.ndarray:
        safe = np.where(self.weight > 0, self.weight, 1.0)[:, None]
        return self.sums / safe

    def to_flat(self) -> np.ndarray:
        return np.concatenate([self.weight, self.sums.ravel(), self.sumsq.ravel(), self.scatter.ravel()])

    @classmethod
    def from_flat(cls, flat: np.ndarray, n_classes: int, dim: int) -> LabelStats:
        c, cd = n_classes, n_classes * dim
        side = dim if flat.size > c + 2 * cd else 0
        return cls(flat[:c].copy(), flat[c : c + cd].reshape(c, dim).copy(), flat[c + cd : c + 2 * cd].reshape(c, dim).copy(),
                   flat[c + 2 * cd :].reshape(side, side).copy())


@dataclass(frozen=True)
class Scorer:
    """score = x . weights^T + (x*x) . quad^T + bias [+ prompt_weight * log_softmax(temperature * cos)].

    A class with bias -inf is never chosen (the method had nothing to estimate it from)."""

    weights: np.ndarray  # (C, D)
    bias: np.ndarray  # (C,)
    quad: np.ndarray | None = None  # (C, D)
    prompt_weight: float = 0.0
    temperature: float = 0.0

    def stored(self) -> Scorer:
        """This scorer as a compact model directory keeps it (weights and quad in float32, like
        ClassMoments.stored): what a view that makes its masks on demand classifies with."""
        return Scorer(self.weights.astype(np.float32).astype(np.float64), self.bias,
                      None if self.quad is None else self.quad.astype(np.float32).astype(np.float64),
                      self.prompt_weight, self.temperature)

    def scores(self, x_unit: np.ndarray, cosines: np.ndarray) -> np.ndarray:
        s = x_unit @ self.weights.T
        if self.quad is not None:
            s += (x_unit * x_unit) @ self.quad.T
        s += np.where(np.isfinite(self.bias), self.bias, 0.0)
        if self.prompt_weight:
            s += self.prompt_weight * log_softmax(self.temperature * cosines)
        s[:, ~np.isfinite(self.bias)] = DISABLED
        return s

    def predict(self, x_unit: np.ndarray, cosines: np.ndarray) -> np.ndarray:
        if len(x_unit) == 0:
            return np.zeros(0, np.int64)
        return np.argmax(self.scores(x_unit, cosines), axis=1)


def _unit(v: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms > 0, norms, 1.0)


def base_scorer(n_classes: int, dim: int) -> Scorer:
    """Scores log_softmax(cos): the same argmax as base cosine (a learner's fallback)."""
    return Scorer(np.zeros((n_classes, dim)), np.zeros(n_classes), prompt_weight=1.0, temperature=1.0)


def centroid_scorer(stats: LabelStats, class_vectors: np.ndarray) -> Scorer:
    """Cosine to the unit mean of each class's items; the prompt vector where a class has none."""
    t = np.asarray(class_vectors, np.float64)
    vectors = np.where((stats.weight > 0)[:, None], _unit(stats.means), _unit(t))
    return Scorer(vectors, np.zeros(len(t)))


def gnb_scorer(moments: ClassMoments) -> Scorer:
    """Gaussian naive Bayes from per-class (count, mean, m2): log prior + diagonal log density.

    Each class's variance gets one pseudo-observation of the pooled variance, so a class with a
    single item (variance 0) stays usable; classes with no item are disabled."""
    count = moments.count.astype(np.float64)
    total = count.sum()
    if total == 0:
        raise ValueError("gnb needs at least one pseudo-labelled item")
    pooled = moments.m2.sum(axis=0) / total
    pooled = np.maximum(pooled, 1e-12 + 1e-6 * pooled.mean())
    var = (moments.m2 + pooled) / (count + 1.0)[:, None]
    mean = moments.mean
    bias = -0.5 * np.sum(mean * mean / var + np.log(2 * np.pi * var), axis=1)
    with np.errstate(divide="ignore"):
        bias = bias + np.log(count / total)
    return Scorer(mean / var, np.where(count > 0, bias, DISABLED), quad=-0.5 / var)


def label_shift_priors(probs: np.ndarray, fixed: np.ndarray | None = None, tolerance: float = LABELSHIFT_TOLERANCE,
                       max_iterations: int = LABELSHIFT_MAX_ITERATIONS) -> tuple[np.ndarray, int, bool]:
    """Class priors re-estimated from a batch by EM (Saerens, Latinne, Decaestecker 2002).

    probs (n, C): each item's posteriors under uniform priors; fixed (n, C) or None: rows whose
    class is known (one-hot), which count as themselves. E-step: posteriors under the current
    priors; M-step: priors = their mean. Stops when no prior moves by more than `tolerance`.
    Returns (priors, iterations, converged)."""
    n, n_classes = probs.shape
    priors = np.full(n_classes, 1.0 / n_classes)
    known = np.zeros(n_classes) if fixed is None else fixed.sum(axis=0)
    free = probs if fixed is None else probs[fixed.sum(axis=1) == 0]
    total = len(free) + known.sum()
    if total == 0:
        return priors, 0, True
    for iteration in range(1, max_iterations + 1):
        weighted = free * priors
        posteriors = weighted / np.maximum(weighted.sum(axis=1, keepdims=True), 1e-300)
        new = (posteriors.sum(axis=0) + known) / total
        moved = float(np.max(np.abs(new - priors)))
        priors = new
        if moved <= tolerance:
            return priors, iteration, True
    return priors, max_iterations, False


def label_shift_scorer(priors: np.ndarray, dim: int, temperature: float = LABELSHIFT_TEMPERATURE) -> Scorer:
    """score_c = log prior_c + log_softmax(temperature * cos)_c: base's probabilities re-weighted
    by the priors (a class whose prior is 0 is never chosen)."""
    with np.errstate(divide="ignore"):
        bias = np.log(np.asarray(priors, np.float64) * len(priors))
    return Scorer(np.zeros((len(priors), dim)), bias, None, 1.0, temperature)


def transductive_initial(cosines: np.ndarray, temperature: float = TRANSDUCTIVE_TEMPERATURE) -> np.ndarray:
    """The zero-shot text prior: soft assignments softmax(temperature * cos)."""
    return softmax(temperature * cosines)


def transductive_scorer(stats: LabelStats, temperature: float = TRANSDUCTIVE_TEMPERATURE,
                        prompt_weight: float = TRANSDUCTIVE_PROMPT_WEIGHT) -> Scorer:
    """M-step of the TransCLIP-ZS core: means, one shared diagonal variance, mixing weights.

    The E-step is Scorer.scores followed by a softmax: z ~ prior^lambda * pi * N(x | mu, var)."""
    total = stats.weight.sum()
    mean = stats.means
    var = (stats.sumsq.sum(axis=0) - (stats.weight[:, None] * mean * mean).sum(axis=0)) / total
    var = np.maximum(var, 1e-12 + 1e-6 * max(float(var.mean()), 0.0))
    with np.errstate(divide="ignore"):
        log_pi = np.log(stats.weight / total)
    bias = -0.5 * np.sum(mean * mean / var, axis=1) + log_pi
    return Scorer(mean / var, np.where(stats.weight > 0, bias, DISABLED), None, prompt_weight, temperature)


def lda_shrinkage(dim: int, weight: float) -> float:
    """The weight of the diagonal target: min(1, D / n) for n items' training weight."""
    return min(1.0, dim / weight) if weight > 0 else 1.0


def lda_scorer(stats: LabelStats, shrinkage: float | None = None) -> Scorer:
    """Linear discriminant with the pooled within-class covariance shrunk towards its diagonal,
    equal priors. `shrinkage`: the diagonal's weight; None: lda_shrinkage(D, training weight).

    Needs stats collected with the scatter matrix."""
    if stats.scatter.size == 0:
        raise ValueError("lda_scorer needs LabelStats with the scatter matrix")
    total = stats.weight.sum()
    if total == 0:
        raise ValueError("no pseudo-labelled item to fit the discriminant on")
    mean = stats.means
    within = (stats.scatter - (mean * stats.weight[:, None]).T @ mean) / total
    within = 0.5 * (within + within.T)
    dim = within.shape[0]
    lam = lda_shrinkage(dim, float(total)) if shrinkage is None else shrinkage
    diagonal = np.diag(within).copy()
    floor = 1e-12 + 1e-6 * max(float(diagonal.mean()), 0.0)  # a dim no item varies in stays invertible
    within = (1 - lam) * within
    within[np.diag_indices(dim)] += lam * np.maximum(diagonal, floor)
    weights = np.linalg.solve(within, mean.T).T
    bias = -0.5 * np.sum(weights * mean, axis=1)
    return Scorer(weights, np.where(stats.weight > 0, bias, DISABLED))


def ovr_masks(moments: ClassMoments, settings: MaskSettings) -> np.ndarray:
    """(C, D) bool: per class the dims where its cross ratio against all other classes' confident
    items passes the threshold (topped up / capped like the pair masks). A class with fewer than
    min_class_count items, or with no other class to compare to, keeps every dim."""
    n_classes = moments.n_classes
    total = ClassMoments(moments.count[:1], moments.mean[:1], moments.m2[:1])  # Chan merge of all classes
    for c in range(1, n_classes):
        total = total.merge(ClassMoments(moments.count[c : c + 1], moments.mean[c : c + 1], moments.m2[c : c + 1]))
    n = moments.count.astype(np.float64)
    rest_n = total.count[0] - n
    safe_rest = np.where(rest_n > 0, rest_n, 1.0)[:, None]
    # remove class c from the total: inverse of Chan's update
    rest_mean = (total.mean[0] * total.count[0] - moments.mean * n[:, None]) / safe_rest
    delta = moments.mean - rest_mean
    rest_m2 = total.m2[0] - moments.m2 - delta * delta * (n * rest_n / np.maximum(total.count[0], 1))[:, None]
    rest_var = np.maximum(rest_m2, 0.0) / safe_rest
    ratio = cross_ratio(moments.mean, moments.variance, rest_mean, rest_var)
    keep = select_dims_block(ratio, settings)
    keep[(moments.count < settings.min_class_count) | (rest_n < settings.min_class_count)] = True
    return keep


def ovr_scores(x_unit: np.ndarray, class_vectors: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(n, C) cos(x|mask_c, t_c|mask_c): each class scored on its own one-vs-rest dims. A class
    that keeps no dim, or on whose dims the item is zero, scores -inf (a prompt that is zero there
    scores 0); a row with no finite score scores 0 everywhere (no evidence: uniform probabilities,
    answer class 0)."""
    if len(x_unit) == 0:
        return np.zeros((0, len(class_vectors)))
    k = keep.astype(np.float64)
    t = np.asarray(class_vectors, np.float64) * k
    t_norm = np.linalg.norm(t, axis=1)
    x_norm = np.sqrt((x_unit * x_unit) @ k.T)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = (x_unit @ t.T) / (x_norm * np.where(t_norm > 0, t_norm, np.inf))
    cos = np.nan_to_num(cos, nan=-np.inf, posinf=-np.inf, neginf=-np.inf)
    cos[~np.isfinite(cos).any(axis=1)] = 0.0
    return cos


def ovr_predict(x_unit: np.ndarray, class_vectors: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """argmax over classes of cos(x|mask_c, t_c|mask_c): both sides restricted to class c's dims."""
    return np.argmax(ovr_scores(x_unit, class_vectors, keep), axis=1)
