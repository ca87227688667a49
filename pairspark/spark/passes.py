"""Passes over the items for the iterative methods' fit loops (core/methods.py's `Passes`).

A pass labels each Arrow batch with the previous iteration's scorers (small, shipped in the
closure), folds the batch into LabelStats per view, and emits one flat float64 payload per
partition. Payloads are summed in partition order inside groups of _GROUP partitions, then the
groups in order: a fixed summation order for a given partitioning, and the driver never holds
more than (partitions / _GROUP) payloads (the cotrain scatter matrix is D x D per view).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark import TaskContext
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pairspark.core.methods import Labeller
from pairspark.core.scorers import LabelStats
from pairspark.spark.compat import to_arrow
from pairspark.spark.io import ITEM_ID, VERIFIED, ClassTable, valid_batches, verified_of, view_base, view_checks
from pairspark.views import View

log = logging.getLogger("pairspark")

_GROUP = 16
_PAYLOAD_SCHEMA = "grp int, part int, view string, payload binary"
_SUM_SCHEMA = "grp int, view string, payload binary"

# items the driver keeps to place cotrain's confidence thresholds (quantile error ~0.5% of rank)
COTRAIN_SAMPLE = 10_000


def _sum_group(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.sort_values("part", kind="stable")
    total = None
    for payload in frame["payload"]:
        values = np.frombuffer(payload, dtype=np.float64)
        total = values.copy() if total is None else total + values
    return pd.DataFrame({"grp": [int(frame["grp"].iloc[0])], "view": [frame["view"].iloc[0]], "payload": [total.tobytes()]})


def stats_pass(valid: DataFrame, views: list[View], tables: dict[str, ClassTable], labeller: Labeller) -> dict[str, LabelStats]:
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
            for name, stats in labeller(xs, cosines, verified_of(batch)).items():
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


def cotrain_sample(valid: DataFrame, views, tables, valid_items: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Unit vectors per view of a fixed random subset (about COTRAIN_SAMPLE items) of the valid
    rows, chosen by a hash of item_id (the same subset whatever the partitioning), plus every
    verified row; and each row's verified class index (-1 for none). cotrain runs its rounds on it."""
    fraction = min(1.0, COTRAIN_SAMPLE / max(valid_items, 1))
    bucket = (F.xxhash64(F.lit(int(seed) + 1), F.col(ITEM_ID).cast("string")) % F.lit(1 << 30)).cast("double")
    bucket = F.when(bucket < 0, bucket + float(1 << 30)).otherwise(bucket)
    chosen = bucket < F.lit(fraction * (1 << 30))
    if VERIFIED in valid.columns:
        chosen = chosen | (F.col(VERIFIED) >= 0)
    chosen = valid.where(chosen) if fraction < 1 else valid
    checks = view_checks(views, {v.name: tables[v.name].dim for v in views})
    table = to_arrow(chosen)
    parts = {v.name: [] for v in views}
    verified = []
    for batch in valid_batches(table.to_batches(), checks):
        verified.append(verified_of(batch))
        for view in views:
            parts[view.name].append(view_base(batch, view.column, tables[view.name])[0])
    xs = {n: (np.concatenate(p) if p else np.zeros((0, tables[n].dim))) for n, p in parts.items()}
    return xs, (np.concatenate(verified) if verified else np.zeros(0, np.int64))




class SparkPasses:
    """core/methods.Passes over a DataFrame of items (with transform.with_duplicate_flag's DUPLICATE): one Spark job
    per pass; invalid rows are skipped in the same Arrow batches."""

    def __init__(self, valid: DataFrame, views: list[View], tables: dict[str, ClassTable], valid_items: int, seed: int):
        self._valid, self._views, self._tables = valid, views, tables
        self._valid_items, self._seed = valid_items, seed
        self._sample: dict[str, np.ndarray] | None = None

    def stats(self, labeller: Labeller) -> dict[str, LabelStats]:
        return stats_pass(self._valid, self._views, self._tables, labeller)

    def sample(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        if self._sample is None:
            self._sample = cotrain_sample(self._valid, self._views, self._tables, self._valid_items, self._seed)
        return self._sample
