"""Fit the iterative methods of core/refine.py: one pass over the items per iteration.

A pass labels each Arrow batch with the previous iteration's scorers (small, shipped in the
closure), folds the batch into LabelStats per view, and emits one flat float64 payload per
partition. Payloads are summed in partition order inside groups of _GROUP partitions, then the
groups in order: a fixed summation order for a given partitioning, and the driver never holds
more than (partitions / _GROUP) payloads (the cotrain scatter matrix is D x D per view).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark import TaskContext
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pairspark.config import View
from pairspark.core.refine import (
    LabelStats,
    Scorer,
    centroid_scorer,
    lda_scorer,
    margin_threshold,
    cotrain_targets,
    softmax,
    top_margin,
    transductive_initial,
    transductive_scorer,
)
from pairspark.core.stats import ClassMoments
from pairspark.errors import UsageError
from pairspark.spark.io import ITEM_ID, ClassTable, valid_batches, view_base, view_checks

log = logging.getLogger("pairspark")

_GROUP = 16
_PAYLOAD_SCHEMA = "grp int, part int, view string, payload binary"
_SUM_SCHEMA = "grp int, view string, payload binary"

# (unit rows per view, base cosines per view) -> LabelStats per view
BatchLabeller = Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], dict[str, LabelStats]]

CENTROID_ITERATIONS = 3
TRANSDUCTIVE_ITERATIONS = 10
COTRAIN_MAX_ITERATIONS = 10
# cotrain stops early once its training class counts move by at most this share of the items
COTRAIN_TOLERANCE = 0.001
# items the driver keeps to place cotrain's confidence thresholds (quantile error ~0.5% of rank)
COTRAIN_SAMPLE = 10_000


def _sum_group(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.sort_values("part", kind="stable")
    total = None
    for payload in frame["payload"]:
        values = np.frombuffer(payload, dtype=np.float64)
        total = values.copy() if total is None else total + values
    return pd.DataFrame({"grp": [int(frame["grp"].iloc[0])], "view": [frame["view"].iloc[0]], "payload": [total.tobytes()]})


def stats_pass(valid: DataFrame, views: list[View], tables: dict[str, ClassTable], labeller: BatchLabeller) -> dict[str, LabelStats]:
    """One pass: the sum over all valid items of labeller's LabelStats, per view."""
    checks = view_checks(views, {v.name: tables[v.name].dim for v in views})
    shapes = {v.name: (len(tables[v.name].class_ids), tables[v.name].dim) for v in views}

    def partial(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        part = TaskContext.get().partitionId()
        acc: dict[str, LabelStats] = {}
        for batch in valid_batches(batches, checks):
            xs, cosines = {}, {}
            for view in views:
                xs[view.name], base = view_base(batch, view.column, tables[view.name])
                cosines[view.name] = base.cosines
            for name, stats in labeller(xs, cosines).items():
                acc[name] = stats if name not in acc else acc[name] + stats
        if acc:
            names = sorted(acc)
            yield pa.RecordBatch.from_arrays(
                [pa.array([part // _GROUP] * len(names), pa.int32()), pa.array([part] * len(names), pa.int32()),
                 pa.array(names, pa.string()), pa.array([acc[n].to_flat().tobytes() for n in names], pa.binary())],
                ["grp", "part", "view", "payload"],
            )

    rows = valid.mapInArrow(partial, _PAYLOAD_SCHEMA).groupBy("grp", "view").applyInPandas(_sum_group, _SUM_SCHEMA).collect()
    out: dict[str, LabelStats] = {}
    for row in sorted(rows, key=lambda r: (r["view"], r["grp"])):
        c, d = shapes[row["view"]]
        stats = LabelStats.from_flat(np.frombuffer(row["payload"], dtype=np.float64), c, d)
        out[row["view"]] = stats if row["view"] not in out else out[row["view"]] + stats
    return out


def fit_centroid(valid, views, tables, moments: dict[str, ClassMoments]) -> dict[str, Scorer]:
    """Iteration 1 from the confident base subset's means (already in `moments`), then re-assign
    every item by cosine to the new centroids and re-average, CENTROID_ITERATIONS in all."""
    scorers = {
        v.name: centroid_scorer(LabelStats(moments[v.name].count.astype(float), moments[v.name].sums,
                                           np.zeros_like(moments[v.name].sums), np.zeros((0, 0))), tables[v.name].vectors)
        for v in views
    }
    for _ in range(CENTROID_ITERATIONS - 1):
        current = dict(scorers)

        def labeller(xs, cosines, current=current):
            return {n: LabelStats.from_labels(x, current[n].predict(x, cosines[n]), len(current[n].bias)) for n, x in xs.items()}

        stats = stats_pass(valid, views, tables, labeller)
        scorers = {v.name: centroid_scorer(stats[v.name], tables[v.name].vectors) for v in views}
    return scorers


def fit_transductive(valid, views, tables) -> dict[str, Scorer]:
    """EM: z from the text prior, then TRANSDUCTIVE_ITERATIONS (M-step, E-step) rounds."""
    current: dict[str, Scorer] | None = None
    for _ in range(TRANSDUCTIVE_ITERATIONS):

        def labeller(xs, cosines, current=current):
            out = {}
            for n, x in xs.items():
                z = transductive_initial(cosines[n]) if current is None else softmax(current[n].scores(x, cosines[n]))
                out[n] = LabelStats.from_weights(x, z)
            return out

        stats = stats_pass(valid, views, tables, labeller)
        current = {v.name: transductive_scorer(stats[v.name]) for v in views}
    return current


def cotrain_sample(valid: DataFrame, views, tables, valid_items: int, seed: int) -> dict[str, np.ndarray]:
    """Unit vectors per view of a fixed random subset (about COTRAIN_SAMPLE items) of the valid
    rows, chosen by a hash of item_id: the same subset whatever the partitioning. The driver uses
    it to place each round's confidence threshold (a quantile of the margins) without a pass."""
    fraction = min(1.0, COTRAIN_SAMPLE / max(valid_items, 1))
    bucket = (F.xxhash64(F.lit(int(seed) + 1), F.col(ITEM_ID).cast("string")) % F.lit(1 << 30)).cast("double")
    bucket = F.when(bucket < 0, bucket + float(1 << 30)).otherwise(bucket)
    chosen = valid.where(bucket < F.lit(fraction * (1 << 30))) if fraction < 1 else valid
    checks = view_checks(views, {v.name: tables[v.name].dim for v in views})
    table = chosen.toArrow()
    parts = {v.name: [] for v in views}
    for batch in valid_batches(table.to_batches(), checks):
        for view in views:
            parts[view.name].append(view_base(batch, view.column, tables[view.name])[0])
    return {n: (np.concatenate(p) if p else np.zeros((0, tables[n].dim))) for n, p in parts.items()}


def fit_cotrain(valid, views, tables, valid_items: int, share: float, seed: int,
                base_thresholds: dict[str, float]) -> tuple[dict[str, Scorer], int]:
    """core/refine.py's cotrain. Round 1 labels by base cosine with the fit's base margin
    thresholds; each later round labels with the previous round's discriminants, confidence
    threshold = the `share` quantile of their margins on a fixed sample. Stops when the trained
    class counts settle or after COTRAIN_MAX_ITERATIONS passes. Returns the scorers and passes."""
    if len(views) != 2:
        raise UsageError("method cotrain needs two views (it learns from the items whose views agree)")
    names = [v.name for v in views]
    sample = cotrain_sample(valid, views, tables, valid_items, seed)
    sample_cos = {n: sample[n] @ tables[n].vectors.astype(np.float64).T for n in names}
    current: dict[str, Scorer] | None = None
    thresholds = [base_thresholds[n] for n in names]
    previous_counts = None
    passes = 0
    for passes in range(1, COTRAIN_MAX_ITERATIONS + 1):

        def labeller(xs, cosines, current=current, thresholds=thresholds):
            scores = [cosines[n] if current is None else current[n].scores(xs[n], cosines[n]) for n in names]
            targets = cotrain_targets([s.argmax(axis=1) for s in scores], [top_margin(s) for s in scores], thresholds)
            return {n: LabelStats.from_labels(xs[n], label, cosines[n].shape[1], keep, with_scatter=True)
                    for n, (label, keep) in zip(names, targets)}

        stats = stats_pass(valid, views, tables, labeller)
        if not stats or min(stats[n].weight.sum() for n in names) == 0:
            raise UsageError("cotrain: no item to learn from (the views agree on none and neither is confident)")
        current = {n: lda_scorer(stats[n]) for n in names}
        thresholds = [margin_threshold(top_margin(current[n].scores(sample[n], sample_cos[n])), share) for n in names]
        counts = np.concatenate([stats[n].weight for n in names])
        moved = None if previous_counts is None else float(np.abs(counts - previous_counts).sum())
        log.info("cotrain pass %d: trained on %s items%s", passes, "/".join(str(int(stats[n].weight.sum())) for n in names),
                 "" if moved is None else f", class counts moved by {int(moved)}")
        if moved is not None and moved <= COTRAIN_TOLERANCE * max(valid_items, 1):
            break
        previous_counts = counts
    return current, passes
