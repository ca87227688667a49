"""Fit: per-view class statistics over the confident subset, then masks (METHOD.md steps 1-5).

Every pass is one mapInArrow over the validated items: each partition folds its Arrow batches
into float64 partial results with numpy and emits a few small rows at its end; those rows are
merged per (view, class) in a grouped pandas UDF. No item is collected to the driver and no
vector is exploded per dimension.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark import TaskContext
from pyspark.sql import DataFrame

from pairspark.config import MarginRule, Settings, View
from pairspark.core.cosine import confident, margin_histogram, margin_quantile
from pairspark.core.model import ITERATIVE_METHODS, ViewModel, fit_view
from pairspark.core.refine import Scorer
from pairspark.errors import UsageError
from pairspark.spark import refine
from pairspark.core.stats import ClassMoments, merge_all
from pairspark.spark.io import ClassTable, list_array, valid_batches, view_base, view_checks

_HISTOGRAM_SCHEMA = "view string, histogram array<bigint>"
_PARTIAL_SCHEMA = "view string, class_index int, part int, count bigint, mean array<double>, m2 array<double>"
_MERGED_SCHEMA = "view string, class_index int, count bigint, mean array<double>, m2 array<double>"
# class_index used for the row that counts the valid items a partition saw.
_ROWS_SEEN = -1


def margin_thresholds(valid: DataFrame, views: list[View], tables: dict[str, ClassTable], rule: MarginRule) -> dict[str, float]:
    """Per-view absolute min_margin; a quantile rule costs one extra pass (a merged histogram)."""
    if not rule.is_quantile:
        return {v.name: rule.value for v in views}
    if rule.value == 0:
        return {v.name: 0.0 for v in views}
    checks = view_checks(views, {v.name: tables[v.name].dim for v in views})

    def partial_histograms(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        totals = {v.name: np.zeros(0, dtype=np.int64) for v in views}
        for batch in valid_batches(batches, checks):
            for view in views:
                hist = margin_histogram(view_base(batch, view.column, tables[view.name])[1].margin)
                totals[view.name] = hist if not totals[view.name].size else totals[view.name] + hist
        names = [n for n, h in totals.items() if h.size]
        if names:
            hists = np.stack([totals[n] for n in names])
            yield pa.RecordBatch.from_arrays([pa.array(names), list_array(hists, pa.int64())], ["view", "histogram"])

    rows = valid.mapInArrow(partial_histograms, _HISTOGRAM_SCHEMA).collect()
    out = {}
    for view in views:
        hists = [np.asarray(r["histogram"], dtype=np.int64) for r in rows if r["view"] == view.name]
        out[view.name] = margin_quantile(np.sum(hists, axis=0), rule.value) if hists else 0.0
    return out


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


def confident_moments(
    valid: DataFrame, views: list[View], tables: dict[str, ClassTable], settings: Settings, margins: dict[str, float]
) -> tuple[dict[str, ClassMoments], int]:
    """Per-view ClassMoments over the confident subset, and the number of valid items seen."""
    checks = view_checks(views, {v.name: tables[v.name].dim for v in views})

    def partial_moments(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        part = TaskContext.get().partitionId()
        acc = {v.name: ClassMoments.empty(tables[v.name].vectors.shape[0], tables[v.name].dim) for v in views}
        rows_seen = 0
        for batch in valid_batches(batches, checks):
            rows_seen += batch.num_rows
            for view in views:
                x_unit, base = view_base(batch, view.column, tables[view.name])
                keep = confident(base, settings.min_cosine, margins[view.name])
                acc[view.name] = acc[view.name].merge(
                    ClassMoments.from_batch(x_unit[keep], base.best[keep], acc[view.name].n_classes)
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


def fit_views(valid: DataFrame, views: list[View], tables: dict[str, ClassTable], settings: Settings,
              methods: tuple[str, ...]) -> FitResult:
    """`valid`: io.mark_duplicates' output; rows core/validate.py rejects are skipped. The
    iterative `methods` get their own passes (spark/refine.py) after the confident statistics."""
    if "cotrain" in methods and len(views) != 2:
        raise UsageError("method cotrain needs two views (it learns from the items whose views agree)")
    margins = margin_thresholds(valid, views, tables, settings.min_margin)
    moments, valid_items = confident_moments(valid, views, tables, settings, margins)
    scorers: dict[str, dict[str, Scorer]] = {v.name: {} for v in views}
    passes: dict[str, float] = {}
    fitters = {
        "centroid": lambda: (refine.fit_centroid(valid, views, tables, moments), refine.CENTROID_ITERATIONS - 1),
        "transductive": lambda: (refine.fit_transductive(valid, views, tables), refine.TRANSDUCTIVE_ITERATIONS),
        "cotrain": lambda: refine.fit_cotrain(valid, views, tables, valid_items, settings.confident_share,
                                              settings.seed, margins),
    }
    seconds: dict[str, float] = {}
    for method in methods:
        if method in ITERATIVE_METHODS and valid_items:
            start = time.perf_counter()
            fitted, passes[method] = fitters[method]()
            seconds[method] = round(time.perf_counter() - start, 2)
            for name, scorer in fitted.items():
                scorers[name][method] = scorer
    fitted_views = [
        fit_view(
            v.name, v.column, tables[v.name].class_ids, tables[v.name].vectors, moments[v.name],
            settings.mask_settings(), margins[v.name], scorers[v.name],
        )
        for v in views
    ]
    return FitResult(fitted_views, valid_items, {v.name: int(moments[v.name].count.sum()) for v in views},
                     {m: {"passes": passes[m], "seconds": seconds[m]} for m in passes})
