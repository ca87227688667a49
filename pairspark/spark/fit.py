"""Fit: per-view class statistics over the confident subset, then masks (METHOD.md steps 1-5).

Every pass is one mapInArrow over the validated items: each partition folds its Arrow batches
into float64 partial results with numpy and emits a few small rows at its end; those rows are
merged per (view, class) in a grouped pandas UDF. No vector is exploded per dimension, and the
only items collected to the driver are its sample (spark/passes.draw_sample: about 10,000 items,
which also place the margin quantile).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark import TaskContext
from pyspark.sql import DataFrame

from pairspark.core.cosine import confident, margin_histogram, margin_quantile
from pairspark.core.methods import REGISTRY, FitContext, iterative
from pairspark.core.model import ViewModel, calibrate, fit_view
from pairspark.core.scorers import Scorer
from pairspark.core.stats import ClassMoments, merge_all
from pairspark.errors import UsageError
from pairspark.params import HasPairsparkParams, MarginRule
from pairspark.spark.io import ClassTable, list_array, valid_batches, verified_of, view_base, view_checks
from pairspark.spark.passes import Sample, SparkPasses, draw_sample
from pairspark.views import View

# cotrain's confidence share when minMargin is an absolute margin (its discriminant scores have
# no absolute scale, so an absolute cosine margin cannot place its threshold)
DEFAULT_CONFIDENT_SHARE = 0.3

log = logging.getLogger("pairspark")

_PARTIAL_SCHEMA = "view string, class_index int, part int, count bigint, mean array<double>, m2 array<double>"
_MERGED_SCHEMA = "view string, class_index int, count bigint, mean array<double>, m2 array<double>"
# class_index used for the row that counts the valid items a partition saw.
_ROWS_SEEN = -1


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


def _merge_group(frame: pd.DataFrame) -> pd.DataFrame:
    """Merge one (view, class)'s partials in partition order (deterministic for a partitioning)."""
    frame = frame.sort_values("part", kind="stable")
    parts = [
        ClassMoments(np.array([c], dtype=np.int64), np.asarray(m, np.float64)[None, :], np.asarray(q, np.float64)[None, :])
        for c, m, q in zip(frame["count"], frame["mean"], frame["m2"])
    ]
    total = merge_all(parts)
    return pd.DataFrame(
        {
            "view": [frame["view"].iloc[0]],
            "class_index": [int(frame["class_index"].iloc[0])],
            "count": [int(total.count[0])],
            "mean": [total.mean[0]],
            "m2": [total.m2[0]],
        }
    )


@dataclass(frozen=True)
class FitResult:
    views: list[ViewModel]
    valid_items: int
    confident_items: dict[str, int]
    method_fits: dict[str, dict]  # per iterative method: passes over the items and seconds
    calibration: dict | None = None  # what the temperatures were fitted on (core/model.calibrate)


def confident_moments(
    valid: DataFrame, views: list[View], tables: dict[str, ClassTable], min_cosine: float, margins: dict[str, float]
) -> tuple[dict[str, ClassMoments], int]:
    """Per-view ClassMoments over the confident subset (plus every verified item, in its verified
    class), and the number of valid items seen."""
    checks = view_checks(views, {v.name: tables[v.name].dim for v in views})

    def partial_moments(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        part = TaskContext.get().partitionId()
        acc = {v.name: ClassMoments.empty(tables[v.name].vectors.shape[0], tables[v.name].dim) for v in views}
        rows_seen = 0
        for batch in valid_batches(batches, checks):
            rows_seen += batch.num_rows
            verified = verified_of(batch)
            for view in views:
                x_unit, base = view_base(batch, view.column, tables[view.name])
                # a verified item counts for its verified class, confident or not
                keep = confident(base, min_cosine, margins[view.name]) | (verified >= 0)
                labels = np.where(verified >= 0, verified, base.best)
                acc[view.name] = acc[view.name].merge(
                    ClassMoments.from_batch(x_unit[keep], labels[keep], acc[view.name].n_classes)
                )
        names, classes, counts, means, m2s = [], [], [], [], []
        for view in views:
            moments = acc[view.name]
            present = np.flatnonzero(moments.count > 0)
            names += [view.name] * len(present)
            classes += present.tolist()
            counts += moments.count[present].tolist()
            means.append(moments.mean[present])
            m2s.append(moments.m2[present])
        names.append(views[0].name)
        classes.append(_ROWS_SEEN)
        counts.append(rows_seen)
        dim0 = tables[views[0].name].dim
        mean_lists = pa.concat_arrays([list_array(m) for m in means] + [list_array(np.zeros((1, dim0)))])
        m2_lists = pa.concat_arrays([list_array(m) for m in m2s] + [list_array(np.zeros((1, dim0)))])
        yield pa.RecordBatch.from_arrays(
            [
                pa.array(names, pa.string()),
                pa.array(classes, pa.int32()),
                pa.array([part] * len(names), pa.int32()),
                pa.array(counts, pa.int64()),
                mean_lists,
                m2_lists,
            ],
            ["view", "class_index", "part", "count", "mean", "m2"],
        )

    # The rows-seen counters merge like any class (their mean and m2 are zeros): one job does both.
    rows = (
        valid.mapInArrow(partial_moments, _PARTIAL_SCHEMA)
        .groupBy("view", "class_index")
        .applyInPandas(_merge_group, _MERGED_SCHEMA)
        .collect()
    )
    out = {v.name: ClassMoments.empty(tables[v.name].vectors.shape[0], tables[v.name].dim) for v in views}
    valid_items = 0
    for row in rows:
        if row["class_index"] == _ROWS_SEEN:
            valid_items += int(row["count"])
            continue
        moments, c = out[row["view"]], row["class_index"]
        moments.count[c] = row["count"]
        moments.mean[c] = np.asarray(row["mean"], dtype=np.float64)
        moments.m2[c] = np.asarray(row["m2"], dtype=np.float64)
    return out, valid_items


def fit_views(valid: DataFrame, views: list[View], tables: dict[str, ClassTable], params: HasPairsparkParams,
              methods: tuple[str, ...], rows: int) -> FitResult:
    """`valid`: items with DUPLICATE (transform.with_duplicate_flag); rows core/validate.py rejects
    are skipped; `rows`: how many item rows there are (valid or not), for the sample's fraction.
    One pass draws the driver's sample (the margin quantile comes from it), one computes the
    confident statistics; the registry's iterative methods then run their fit loops over
    SparkPasses."""
    for method in methods:
        if REGISTRY[method].min_views > len(views):
            raise UsageError(f"method {method} needs two views (it learns from the items whose views agree)")
    rule = params.margin_rule()
    sample = draw_sample(valid, views, tables, rows, params.getSeed())
    margins = margin_thresholds(sample, views, rule)
    moments, valid_items = confident_moments(valid, views, tables, params.getMinCosine(), margins)
    scorers: dict[str, dict[str, Scorer]] = {v.name: {} for v in views}
    method_fits: dict[str, dict] = {}
    share = rule.value if rule.is_quantile else DEFAULT_CONFIDENT_SHARE
    if valid_items:
        passes = SparkPasses(valid, views, tables, sample)
        if not rule.is_quantile and iterative(methods):
            log.warning("minMargin %s is an absolute margin: %s place their confidence threshold at the default "
                        "share %.0f%% of least confident items", rule, ",".join(iterative(methods)), share * 100)
        context = FitContext([v.name for v in views], {v.name: tables[v.name].vectors for v in views}, moments, margins,
                             valid_items, share)
        for method in iterative(methods):
            start = time.perf_counter()
            fitted, facts = REGISTRY[method].fit(passes, context)
            method_fits[method] = {**facts, "seconds": round(time.perf_counter() - start, 2), "confident_share": share}
            for name, scorer in fitted.items():
                scorers[name][method] = scorer
    fitted_views = [
        fit_view(v.name, v.column, tables[v.name].class_ids, tables[v.name].vectors, moments[v.name],
                 params.mask_settings(), margins[v.name], scorers[v.name])
        for v in views
    ]
    calibration = None
    if valid_items:
        calibration = calibrate(fitted_views, methods, sample.xs, sample.verified, margins, share)
    return FitResult(fitted_views, valid_items, {v.name: int(moments[v.name].count.sum()) for v in views}, method_fits,
                     calibration)
