"""Fit: per-view class statistics over the confident subset, then masks (METHOD.md steps 1-5).

The passes over the items are spark/passes.py's: one draws the driver's sample (about 10,000
items, which also place the margin quantile), one computes the confident moments, on which the
iterative methods' first pass rides. No vector is exploded per dimension and no other item
reaches the driver.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pairspark.core.batches import ClassTable
from pairspark.core.confidence import calibrate
from pairspark.core.cosine import margin_histogram, margin_quantile
from pairspark.core.fitting import FitContext
from pairspark.core.methods import REGISTRY, iterative
from pairspark.core.model import ViewModel, fit_view
from pairspark.core.scorers import Scorer
from pairspark.errors import UsageError
from pairspark.params import HasPairsparkParams, MarginRule
from pairspark.spark.passes import Confident, ItemRows, Sample, SparkPasses, draw_sample
from pairspark.views import View

# cotrain's confidence share when minMargin is an absolute margin (its discriminant scores have
# no absolute scale, so an absolute cosine margin cannot place its threshold)
DEFAULT_CONFIDENT_SHARE = 0.3

log = logging.getLogger("pairspark")

def margin_thresholds(sample: Sample, views: list[View], rule: MarginRule) -> dict[str, float]:
    """Per-view absolute min_margin. A quantile rule takes the quantile of the drawn sample's base
    margins, binned as core/cosine.margin_quantile bins them: every valid item's when the items
    number at most COTRAIN_SAMPLE, else an estimate from about COTRAIN_SAMPLE of them (rank error
    about 0.5%), which saves a pass over the vectors."""
    if not rule.is_quantile:
        return {v.name: rule.value for v in views}
    if rule.value == 0:
        return {v.name: 0.0 for v in views}
    return {v.name: margin_quantile(margin_histogram(sample.margins[v.name][sample.drawn]), rule.value) for v in views}


@dataclass(frozen=True)
class FitResult:
    views: list[ViewModel]
    valid_items: int
    confident_items: dict[str, int]
    method_fits: dict[str, dict]  # per iterative method: passes over the items and seconds
    calibration: dict | None = None  # what the temperatures were fitted on (core/confidence.calibrate)
    reads: int = 0  # reads of the items' vectors: the sample's draw and every pass


def fit_views(valid: ItemRows, views: list[View], tables: dict[str, ClassTable], params: HasPairsparkParams,
              methods: tuple[str, ...], rows: int) -> FitResult:
    """`valid`: the items (spark/passes.ItemRows: a DataFrame's, or the pyarrow reader's); rows
    core/validate.py rejects are skipped; `rows`: how many item rows there are (valid or not), for the sample's fraction.

    One pass draws the driver's sample (the margin quantile comes from it). The registry's
    iterative methods then run their fit loops over SparkPasses, those that need the confident
    moments last: the moments ride on the first pass of the others (one read of the vectors
    fewer), or take a pass of their own."""
    for method in methods:
        if REGISTRY[method].min_views > len(views):
            raise UsageError(f"method {method} needs two views (it learns from the items whose views agree)")
    rule = params.margin_rule()
    sample = draw_sample(valid, views, tables, rows, params.getSeed())
    margins = margin_thresholds(sample, views, rule)
    passes = SparkPasses(valid, views, tables, sample, Confident(params.getMinCosine(), margins))
    scorers: dict[str, dict[str, Scorer]] = {v.name: {} for v in views}
    held_out: dict[str, dict] = {}  # per method, the sample's held-out scores per view (core/fitting.Fit)
    method_fits: dict[str, dict] = {}
    share = rule.value if rule.is_quantile else DEFAULT_CONFIDENT_SHARE
    names = [v.name for v in views]
    vectors = {v.name: tables[v.name].vectors for v in views}
    loops = iterative(methods)
    if loops and not rule.is_quantile:
        log.warning("minMargin %s is an absolute margin: %s place their confidence threshold at the default "
                    "share %.0f%% of least confident items", rule, ",".join(loops), share * 100)
    # until the moments pass has counted them, the valid items are bounded by the rows (or known:
    # the sample holds every valid item when the rows are at most COTRAIN_SAMPLE)
    bound = len(sample.verified) if sample.complete else rows
    first = [m for m in loops if not REGISTRY[m].needs_moments]
    if len(sample.verified):  # an empty sample is a complete one (draw_sample): no valid item
        for method in first:
            _fit_method(method, passes, FitContext(names, vectors, {}, margins, bound, share), method_fits, scorers,
                        held_out)
    moments, valid_items = passes.moments()
    if valid_items:
        for method in (m for m in loops if REGISTRY[m].needs_moments):
            _fit_method(method, passes, FitContext(names, vectors, moments, margins, valid_items, share), method_fits,
                        scorers, held_out)
    fitted_views = [
        fit_view(v.name, v.column, tables[v.name].class_ids, tables[v.name].vectors, moments[v.name],
                 params.mask_settings(), margins[v.name], scorers[v.name], tables[v.name].tree)
        for v in views
    ]
    calibration = None
    if valid_items:
        calibration = calibrate(fitted_views, methods, sample.xs, sample.verified, margins, share,
                                params.getCandidates(), held_out)
    return FitResult(fitted_views, valid_items, {v.name: int(moments[v.name].count.sum()) for v in views}, method_fits,
                     calibration, sample.reads + passes.reads)


def _fit_method(method: str, passes: SparkPasses, context: FitContext, method_fits: dict, scorers: dict,
                held_out: dict) -> None:
    start = time.perf_counter()
    fit = REGISTRY[method].fit(passes, context)
    method_fits[method] = {**fit.facts, "seconds": round(time.perf_counter() - start, 2),
                           "confident_share": context.confident_share}
    for name, scorer in fit.scorers.items():
        scorers[name][method] = scorer
    held_out[method] = fit.held_out
