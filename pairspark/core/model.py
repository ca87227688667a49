"""A fitted view: class vectors, statistics and pair masks, and how it classifies a batch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pairspark.core.calibration import answer_scores, fit_temperature, probabilities, top_k
from pairspark.core.cosine import base_assign, top_candidates, unit_rows64
from pairspark.core.masks import MaskSettings, PairMasks, class_pairs, pair_masks
from pairspark.core.methods import CALIBRATION_FOLDS, REGISTRY, Batch
from pairspark.core.scorers import Scorer, gnb_scorer, margin_threshold, ovr_masks, second_opinion_targets, top_margin
from pairspark.core.stats import ClassMoments
from pairspark.core.tournament import pair_coefficients, pair_weights, resolve_candidates

@dataclass
class ViewModel:
    """Everything one view needs at classification time, all small (classes x dims)."""

    name: str
    column: str
    class_ids: list[str]
    class_vectors: np.ndarray  # (C, D) unit rows, float32
    moments: ClassMoments  # over the confident subset
    masks: PairMasks  # the dims of every pair of class_pairs(C)
    min_margin_used: float = 0.0
    mask_settings: MaskSettings = field(default_factory=MaskSettings)
    scorers: dict[str, Scorer] = field(default_factory=dict)  # fitted learning methods (core/methods.py)
    # per method with per-class scores, the temperature of its probabilities (core/calibration.py);
    # a method missing here (a model from before calibration) gets 1.0
    calibration: dict[str, float] = field(default_factory=dict)
    _coefficients: np.ndarray | None = field(default=None, repr=False, compare=False)
    _vectors64: np.ndarray | None = field(default=None, repr=False, compare=False)
    _ovr_keep: np.ndarray | None = field(default=None, repr=False, compare=False)
    _gnb: Scorer | None = field(default=None, repr=False, compare=False)
    _weights: np.ndarray | None = field(default=None, repr=False, compare=False)
    _weights_built: bool = field(default=False, repr=False, compare=False)

    def __getstate__(self) -> dict:
        # the stored pair weights are rebuilt where they are used (milliseconds), never shipped
        state = dict(self.__dict__)
        state.update(_weights=None, _weights_built=False)
        return state

    @property
    def dim(self) -> int:
        return int(self.class_vectors.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.class_ids)

    @property
    def vectors64(self) -> np.ndarray:
        if self._vectors64 is None:
            self._vectors64 = self.class_vectors.astype(np.float64)
        return self._vectors64

    @property
    def coefficients(self) -> np.ndarray:
        """Per pair 1/||t_a|mask||, 1/||t_b|mask|| (P x 2, small: computed on the driver, broadcast)."""
        if self._coefficients is None:
            self._coefficients = pair_coefficients(self.vectors64, self.masks)
        return self._coefficients

    @property
    def pair_weights(self) -> np.ndarray | None:
        """The pairs' match weights stored for the kernels (tournament.pair_weights), or None
        when they are formed on the fly; built on first use in the process that classifies."""
        if not self._weights_built:
            self._weights = pair_weights(self.vectors64, self.masks, self.coefficients)
            self._weights_built = True
        return self._weights

    @property
    def ovr_keep(self) -> np.ndarray:
        """(C, D) one-vs-rest masks from the confident statistics."""
        if self._ovr_keep is None:
            self._ovr_keep = ovr_masks(self.moments, self.mask_settings)
        return self._ovr_keep

    @property
    def gnb(self) -> Scorer:
        if self._gnb is None:
            self._gnb = gnb_scorer(self.moments)
        return self._gnb

    def prepare(self, methods: tuple[str, ...]) -> ViewModel:
        """Compute on the driver what `methods` need, so it ships with the model rather than being
        rebuilt in every task. Returns self."""
        missing = [m for m in methods if REGISTRY[m].iterative and m not in self.scorers]
        if missing:
            raise ValueError(f"view {self.name}: the model was not fitted for {', '.join(missing)}; refit with methods")
        if "pairwise" in methods or "roundrobin" in methods:
            self.coefficients
        if "ovr" in methods:
            self.ovr_keep
        if "gnb" in methods:
            self.gnb
        self.vectors64
        return self

    def pairs(self) -> np.ndarray:
        return class_pairs(self.n_classes)

    def probabilities(self, method: str, scores: np.ndarray) -> np.ndarray:
        """(n, C) calibrated probabilities from a method's per-class scores."""
        return probabilities(scores, self.calibration.get(method, 1.0))

    def classify(self, x: np.ndarray, item_keys: np.ndarray, methods: tuple[str, ...], candidates: int | str = 0,
                 margin_of: str | None = None, k: int = 3) -> dict[str, np.ndarray]:
        """Class indices per method for a batch x (n, D) of raw vectors, plus `base_cosine`,
        `margin`: how sure `margin_of` (default: the last method) is of its answer, its own top-2
        score margin, or the base cosine margin for the methods that only name a winner
        (pairwise, roundrobin); only comparable within a method; and from `margin_of`'s
        calibrated probabilities (base's for a method that only names a winner): `confidence`,
        the probability of its answer, and `top` / `top_p`, its k most probable classes.

        candidates > 0: the pairwise bracket (and the round robin) holds only each item's top
        `candidates` base classes; "auto": core/tournament.resolve_candidates.

        float64 on purpose: BLAS float32 results for one row change in the last bits with the
        batch it is computed in (measured: thousands of differing entries), so answers and cosines
        would depend on partitioning. In float64 those differences (~1e-16) vanish when the cosine
        is rounded to float32 and can only flip an exact tie.
        """
        x_unit = unit_rows64(x)
        base = base_assign(x_unit, self.vectors64)
        bracket = resolve_candidates(candidates, self.n_classes)
        top = top_candidates(base.cosines, bracket) if 0 < bracket < self.n_classes else None
        batch = Batch(x_unit, base, item_keys, top)
        out: dict[str, np.ndarray] = {"base_cosine": base.best_cosine.astype(np.float32), "margin": base.margin}
        margin_of = margin_of or methods[-1]
        for method in methods:
            labels, scores = REGISTRY[method].predict(self, batch)
            out[method] = labels
            if method == margin_of:
                if scores is not None and method != "base":
                    out["margin"] = top_margin(scores)
                # a method not calibrated at fit (ovr, gnb asked only at classify; a model from
                # before the method was calibrated) carries base's probabilities, its answer first
                own = method == "base" or method in self.calibration
                probs = self.probabilities(method if own else "base",
                                           answer_scores(labels, scores if own else None, base.cosines))
                out["confidence"] = probs[np.arange(len(labels)), labels] if len(labels) else np.zeros(0)
                out["top"], out["top_p"] = top_k(probs, k, first=labels)
        return out


def fit_view(
    name: str,
    column: str,
    class_ids: list[str],
    class_unit: np.ndarray,
    moments: ClassMoments,
    mask_settings: MaskSettings,
    min_margin_used: float = 0.0,
    scorers: dict[str, Scorer] | None = None,
) -> ViewModel:
    return ViewModel(
        name=name,
        column=column,
        class_ids=list(class_ids),
        class_vectors=np.asarray(class_unit, dtype=np.float32),
        moments=moments,
        masks=pair_masks(moments, mask_settings),
        min_margin_used=min_margin_used,
        mask_settings=mask_settings,
        scorers=dict(scorers or {}),
    )


# verified labels and the label-free second opinion are fitted together, the second opinion
# weighing as much as this many labelled items: a handful of labels moves the temperature only as
# far as they agree among themselves, many labels decide it (docs/METHOD.md, "Confidence")
CALIBRATION_PRIOR_ITEMS = 20


def second_opinions(views: list[ViewModel], bases: dict, base_thresholds: dict[str, float]
                    ) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Per view the label-free (label, keep) its confidence is fitted to predict, on the driver's
    sample: with two views the OTHER view's zero-shot (base) answers, where the two base answers
    agree or the other one is confident (core/scorers.second_opinion_targets): never trained, so
    their mistakes are not taught to agree with the view's learned answers (the other view's learned
    answers would be: co-training makes the views agree, on their mistakes too). With one view None:
    calibrate takes the view's own confident answers."""
    if len(views) != 2:
        return [None] * len(views)
    names = [v.name for v in views]
    return second_opinion_targets([bases[n].best for n in names], [bases[n].margin for n in names],
                                  [base_thresholds[n] for n in names])


def calibrate(views: list[ViewModel], methods: tuple[str, ...], sample: dict[str, np.ndarray], verified: np.ndarray,
              base_thresholds: dict[str, float], confident_share: float, candidates: int | str = "auto",
              held_out: dict[str, dict[str, np.ndarray]] | None = None) -> dict:
    """Fit every view's temperatures (ViewModel.calibration) on the driver's sample, in place, for
    base and each method in `methods`: T such that the probability of a method's answer,
    softmax(answer_scores / T)[answer], predicts whether a second opinion confirms the answer
    (core/calibration.fit_temperature), never whether the method agrees with itself:

    * the scores are a learner's `held_out` ones (core/methods.Fit: each sample row scored by a
      discriminant fitted without its fold): the discriminant that trained on a row reproduces its
      training label there, and a temperature fitted on that runs to 0;
    * the second opinion: with two views the other view's zero-shot answers (second_opinions);
      with one view the view's base answers where base is confident, or, for a method that answers
      as base on every sample item (base itself, selftrain fallen back to base), gnb's confident
      answers (gnb fitted on the confident base subset);
    * verified labels in the sample: each labelled row weighs 1 and the second opinion as much as
      CALIBRATION_PRIOR_ITEMS labelled rows in all.

    A tournament's answer_scores are base's cosines with its winner lifted; its brackets are drawn
    from the sample's row numbers, `candidates` wide, as classify plays them for items.
    Returns what was fitted, for meta.json."""
    held_out = held_out or {}
    xs = {v.name: np.asarray(sample[v.name], np.float64) for v in views}
    bases = {v.name: base_assign(xs[v.name], v.vectors64) for v in views}
    labelled = verified >= 0
    n_verified = int(labelled.sum())
    opinions = second_opinions(views, bases, base_thresholds)
    source = ("the other view's zero-shot answers" if len(views) == 2 else
              "the view's own confident answers (base's, or gnb's for methods that answer as base)")
    if n_verified:
        source = f"{n_verified} verified labels, and {source} weighing as {CALIBRATION_PRIOR_ITEMS} labels"
    facts: dict = {"fitted_on": source, "held_out_folds": CALIBRATION_FOLDS, "views": {}}
    for view, opinion in zip(views, opinions):
        x, base = xs[view.name], bases[view.name]
        bracket = resolve_candidates(candidates, view.n_classes)
        top = top_candidates(base.cosines, bracket) if 0 < bracket < view.n_classes else None
        batch = Batch(x, base, np.arange(len(x), dtype=np.uint64), top)
        items = {}
        for method in dict.fromkeys(("base", *methods)):
            own = held_out.get(method, {}).get(view.name)
            if own is not None:
                answers, scores = own.argmax(axis=1), own
            else:
                answers, scores = REGISTRY[method].predict(view.prepare((method,)), batch)
                scores = answer_scores(answers, scores, base.cosines)
            if opinion is not None:
                label, keep = opinion
            elif not np.array_equal(answers, base.best):
                label, keep = base.best, base.margin >= base_thresholds[view.name]
            else:
                gnb = view.gnb.scores(x, base.cosines)
                label, keep = gnb.argmax(axis=1), top_margin(gnb) >= margin_threshold(top_margin(gnb), confident_share)
            keep = keep & ~labelled
            weights = keep.astype(np.float64)
            if n_verified:  # the second opinion as a prior worth CALIBRATION_PRIOR_ITEMS labels
                weights *= CALIBRATION_PRIOR_ITEMS / max(int(keep.sum()), 1)
                weights[labelled] = 1.0
            label = np.where(labelled, verified, label)
            used = weights > 0
            view.calibration[method] = fit_temperature(scores[used], answers[used], (answers == label)[used], weights[used])
            items[method] = int(used.sum())
        facts["views"][view.name] = {"items": items, "temperature": dict(view.calibration)}
    return facts
