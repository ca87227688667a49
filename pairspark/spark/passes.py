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
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import TaskContext
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pairspark.core.methods import Labeller
from pairspark.core.scorers import LabelStats
from pairspark.spark.compat import to_arrow
from pairspark.spark.io import ITEM_ID, VERIFIED, ClassTable, by_name, valid_batches, verified_of, view_base, view_checks
from pairspark.views import View

log = logging.getLogger("pairspark")

_GROUP = 16
_PAYLOAD_SCHEMA = "grp int, part int, view string, payload binary"
_SUM_SCHEMA = "grp int, view string, payload binary"

# items the driver keeps: the margin quantile (rank error ~0.5%), cotrain's rounds, the calibration
COTRAIN_SAMPLE = 10_000
_DRAWN = "_pairspark_drawn"


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


@dataclass(frozen=True)
class Sample:
    """The driver's sample of the valid items: what cotrain's rounds, the calibration and the
    margin quantile are computed on."""

    xs: dict[str, np.ndarray]  # unit vectors per view
    verified: np.ndarray  # verified class index per row (-1 for none)
    margins: dict[str, np.ndarray]  # base best-minus-second cosine margin per row and view
    drawn: np.ndarray  # rows chosen by the hash draw (the verified rows are added whatever their hash)


def draw_sample(valid: DataFrame, views, tables, rows: int, seed: int) -> Sample:
    """A fixed random subset (about COTRAIN_SAMPLE items) of the valid rows, chosen by a hash of
    item_id (the same subset whatever the partitioning), plus every verified row. `rows`: the
    number of item rows (valid or not) the fraction is taken of; when it is at most COTRAIN_SAMPLE
    the sample is every valid row."""
    fraction = min(1.0, COTRAIN_SAMPLE / max(rows, 1))
    bucket = (F.xxhash64(F.lit(int(seed) + 1), F.col(ITEM_ID).cast("string")) % F.lit(1 << 30)).cast("double")
    bucket = F.when(bucket < 0, bucket + float(1 << 30)).otherwise(bucket)
    drawn = (bucket < F.lit(fraction * (1 << 30))) if fraction < 1 else F.lit(True)
    chosen = valid.select(*[by_name(c) for c in valid.columns], drawn.alias(_DRAWN))
    if fraction < 1:
        keep = F.col(_DRAWN) | (F.col(VERIFIED) >= 0) if VERIFIED in valid.columns else F.col(_DRAWN)
        chosen = chosen.where(keep)
    checks = view_checks(views, {v.name: tables[v.name].dim for v in views})
    table = to_arrow(chosen)
    parts: dict[str, list] = {v.name: [] for v in views}
    margins: dict[str, list] = {v.name: [] for v in views}
    verified, flags = [], []
    for batch in valid_batches(table.to_batches(), checks):
        verified.append(verified_of(batch))
        flags.append(pc.fill_null(batch.column(_DRAWN), False).to_numpy(zero_copy_only=False))
        for view in views:
            x_unit, base = view_base(batch, view.column, tables[view.name])
            parts[view.name].append(x_unit)
            margins[view.name].append(base.margin)

    def joined(arrays: list, empty: np.ndarray) -> np.ndarray:
        return np.concatenate(arrays) if arrays else empty

    return Sample({n: joined(p, np.zeros((0, tables[n].dim))) for n, p in parts.items()},
                  joined(verified, np.zeros(0, np.int64)),
                  {n: joined(m, np.zeros(0)) for n, m in margins.items()},
                  joined(flags, np.zeros(0, bool)).astype(bool))


class SparkPasses:
    """core/methods.Passes over a DataFrame of items (with transform.with_duplicate_flag's DUPLICATE): one Spark job
    per pass; invalid rows are skipped in the same Arrow batches. The sample is drawn once, before
    (draw_sample)."""

    def __init__(self, valid: DataFrame, views: list[View], tables: dict[str, ClassTable], sample: Sample):
        self._valid, self._views, self._tables, self._sample = valid, views, tables, sample

    def stats(self, labeller: Labeller) -> dict[str, LabelStats]:
        return stats_pass(self._valid, self._views, self._tables, labeller)

    def sample(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return self._sample.xs, self._sample.verified
