"""A fitted view: class vectors, statistics and pair masks, and how it classifies a batch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pairspark.core.calibration import answer_scores, fit_temperature, probabilities, top_k
from pairspark.core.cosine import base_assign, top_candidates, unit_rows64
from pairspark.core.masks import MaskSettings, PairMasks, class_pairs, pair_masks
from pairspark.core.methods import PRIMARY_ORDER, REGISTRY, Batch, calibration_targets
from pairspark.core.scorers import Scorer, gnb_scorer, margin_threshold, ovr_masks, top_margin
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


# below this many verified items in the driver's sample, temperatures are fitted on the label-free
# calibration targets (a temperature from a handful of items is noise)
CALIBRATION_MIN_VERIFIED = 20


def calibrate(views: list[ViewModel], methods: tuple[str, ...], sample: dict[str, np.ndarray], verified: np.ndarray,
              base_thresholds: dict[str, float], confident_share: float, candidates: int | str = "auto",
              held_out: dict[str, dict[str, np.ndarray]] | None = None) -> dict:
    """Fit every view's temperatures (ViewModel.calibration) on the driver's sample, in place: for
    base and each method in `methods`, on its answer_scores (a tournament's winner lifted above
    base's cosines; its brackets drawn from the sample's row numbers, `candidates` wide, as classify
    plays them for items). A learner's scores are its `held_out` ones (core/methods.Fit: each
    sample row scored by a discriminant fitted without its fold), never those of the discriminant
    that trained on the row: that one reproduces its own training labels, and its temperature would
    run to 0. A temperature is fitted to predict a second opinion's answers, never the method's own:

    * verified labels, when the sample holds at least CALIBRATION_MIN_VERIFIED;
    * two views: core/methods.calibration_targets from the primary learner's held-out scores (the
      agreed items and the other view's confident answers);
    * one view: base's confident answers (margin >= the fit's threshold), or, for a method that
      answers as base does on every sample item (base itself, selftrain fallen back to base),
      gnb's confident answers (gnb fitted on the confident base subset).

    Returns what was fitted, for meta.json."""
    held_out = held_out or {}
    names = [v.name for v in views]
    learner = next((m for m in PRIMARY_ORDER if m in methods and REGISTRY[m].iterative), None)
    xs = {v.name: np.asarray(sample[v.name], np.float64) for v in views}
    bases = {v.name: base_assign(xs[v.name], v.vectors64) for v in views}

    def scores_of(view: ViewModel, method: str, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """(answers, answer_scores) of a method on the sample, held out where the fit gave them."""
        own = held_out.get(method, {}).get(view.name)
        if own is not None:
            return own.argmax(axis=1), own
        answers, scores = REGISTRY[method].predict(view.prepare((method,)), batch)
        return answers, answer_scores(answers, scores, batch.base.cosines)

    batches = {}
    for view in views:
        base = bases[view.name]
        bracket = resolve_candidates(candidates, view.n_classes)
        top = top_candidates(base.cosines, bracket) if 0 < bracket < view.n_classes else None
        batches[view.name] = Batch(xs[view.name], base, np.arange(len(xs[view.name]), dtype=np.uint64), top)
    n_verified = int((verified >= 0).sum())
    if n_verified >= CALIBRATION_MIN_VERIFIED:
        source = "verified labels"
        shared = [(verified, verified >= 0)] * len(views)
    elif len(views) == 2:
        source = f"{learner or 'base'} second opinions (each view judged by the other, held out)"
        if learner:
            opinion = {v.name: scores_of(v, learner, batches[v.name])[1] for v in views}
            thresholds = [margin_threshold(top_margin(opinion[n]), confident_share) for n in names]
        else:
            opinion, thresholds = {n: b.cosines for n, b in bases.items()}, [base_thresholds[n] for n in names]
        shared = calibration_targets(names, opinion, thresholds, verified)
    else:
        source, shared = "a second opinion: base's confident answers, gnb's for methods that answer as base", None
    facts: dict = {"fitted_on": source, "views": {}}
    for i, view in enumerate(views):
        x, base = xs[view.name], bases[view.name]
        items = {}
        for method in dict.fromkeys(("base", *methods)):
            answers, scores = scores_of(view, method, batches[view.name])
            if shared is not None:
                label, keep = shared[i]
            elif not np.array_equal(answers, base.best):
                label, keep = base.best, base.margin >= base_thresholds[view.name]
            else:
                opinion = view.gnb.scores(x, base.cosines)
                label, keep = opinion.argmax(axis=1), top_margin(opinion) >= margin_threshold(top_margin(opinion), confident_share)
            view.calibration[method] = fit_temperature(scores[keep], label[keep])
            items[method] = int(keep.sum())
        facts["views"][view.name] = {"items": items, "temperature": dict(view.calibration)}
    return facts
