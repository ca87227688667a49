"""Fitting the confidence: each view's temperatures (ViewModel.calibration), at fit time on the
driver's sample, against a second opinion and any verified labels.

Above the registry (it scores the sample with every fitted method); the temperature math and the
calibration metrics are core/calibration.py, the held-out scores of the learners core/held_out.py.
"""

from __future__ import annotations

import numpy as np

from pairspark.core.calibration import answer_scores, fit_temperature
from pairspark.core.cosine import base_assign, top_candidates
from pairspark.core.held_out import CALIBRATION_FOLDS
from pairspark.core.methods import REGISTRY, Batch, gnb, prepare
from pairspark.core.model import ViewModel
from pairspark.core.targets import margin_threshold, second_opinion_targets, top_margin
from pairspark.core.tournament import resolve_candidates

# verified labels and the label-free second opinion are fitted together, the second opinion
# weighing as much as this many labelled items: a handful of labels moves the temperature only as
# far as they agree among themselves, many labels decide it (docs/METHOD.md, "Confidence")
CALIBRATION_PRIOR_ITEMS = 20


def second_opinions(views: list[ViewModel], bases: dict, base_thresholds: dict[str, float]
                    ) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Per view the label-free (label, keep) its confidence is fitted to predict, on the driver's
    sample: with two views the OTHER view's zero-shot (base) answers, where the two base answers
    agree or the other one is confident (core/targets.second_opinion_targets): never trained, so
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

    * the scores are a learner's `held_out` ones (core/fitting.Fit: each sample row scored by a
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
                answers, scores = REGISTRY[method].predict(prepare(view, (method,)), batch)
                scores = answer_scores(answers, scores, base.cosines)
            if opinion is not None:
                label, keep = opinion
            elif not np.array_equal(answers, base.best):
                label, keep = base.best, base.margin >= base_thresholds[view.name]
            else:
                gnb_scores = gnb(view).scores(x, base.cosines)
                label, keep = gnb_scores.argmax(axis=1), top_margin(gnb_scores) >= margin_threshold(
                    top_margin(gnb_scores), confident_share)
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
