"""Passes over the items: the confident class moments and the iterative methods' fit loops
(core/fitting.py's `Passes`), and the driver's sample.

A pass labels each Arrow batch with the previous iteration's scorers (small, shipped in the
closure), folds the batch into LabelStats per view, and emits one flat float64 payload per
partition. Payloads are summed in partition order inside groups of _GROUP partitions, then the
groups in order: a fixed summation order for a given partitioning, and the driver never holds
more than (partitions / _GROUP) payloads (the cotrain scatter matrix is D x D per view).

The confident moments (METHOD.md steps 1-3) are partial ClassMoments per partition and class,
merged per (view, class) in partition order (Chan's update is not associative, so there is one
order). They ride on the first stats pass when there is one (SparkPasses.moments): one read of the
vectors serves both, and the moments are the same numbers as from a pass of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import TaskContext
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pairspark.core.batches import ClassTable, chunk_rows, valid_batches, verified_of, view_base, view_checks
from pairspark.core.columns import ITEM_ID, VERIFIED
from pairspark.core.cosine import confident
from pairspark.core.fitting import Labeller
from pairspark.core.scorers import LabelStats
from pairspark.core.stats import ClassMoments, merge_all
from pairspark.core.tournament import bracket_keys
from pairspark.spark.compat import to_arrow
from pairspark.spark.io import by_name
from pairspark.views import View

log = logging.getLogger("pairspark")

_GROUP = 16
# one row per partition: kind "s" (grp, view, payload: a LabelStats flat), or kind "m" (view,
# class_index, count, payload: the class's mean then m2); class_index _ROWS_SEEN counts the valid
# rows a partition saw (its mean and m2 are zeros, so it merges like any class)
_PARTIAL_SCHEMA = "kind string, grp int, part int, view string, class_index int, count bigint, payload binary"
_MERGED_SCHEMA = "kind string, grp int, view string, class_index int, count bigint, payload binary"
_ROWS_SEEN = -1


BatchFn = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


class ItemRows(Protocol):
    """Where a fit reads its items: Arrow batches of rows with ITEM_ID, the view columns,
    DUPLICATE and, with verified labels, VERIFIED (invalid rows included: every pass skips them)."""

    def map_batches(self, fn: BatchFn, schema: str) -> DataFrame:
        """Lazily: fn over each partition's batches (one partition per Spark task)."""

    def drawn(self, fraction: float, seed: int) -> pa.Table:
        """The rows `drawn_mask` draws at `fraction`, plus every verified row, with DRAWN (whether the
        draw chose the row), collected to the driver."""


def drawn_mask(item_ids: pa.Array, fraction: float, seed: int) -> np.ndarray:
    """The sample's draw outside the JVM: the same rows as FrameRows.drawn's Spark expression
    (xxhash64(seed + 1, item_id as a string) mod 2^30, Java's remainder, below fraction * 2^30)."""
    if fraction >= 1:
        return np.ones(len(item_ids), bool)
    keys = bracket_keys(item_ids, int(seed) + 1).view(np.int64)
    bucket = np.fmod(keys, np.int64(1 << 30))
    bucket = np.where(bucket < 0, bucket + (1 << 30), bucket).astype(np.float64)
    return bucket < fraction * (1 << 30)


@dataclass(frozen=True)
class FrameRows:
    """ItemRows of a Spark DataFrame (the estimator's input, with items.with_duplicate_flag's DUPLICATE)."""

    valid: DataFrame

    def map_batches(self, fn: BatchFn, schema: str) -> DataFrame:
        return self.valid.mapInArrow(fn, schema)

    def drawn(self, fraction: float, seed: int) -> pa.Table:
        valid = self.valid
        bucket = (F.xxhash64(F.lit(int(seed) + 1), F.col(ITEM_ID).cast("string")) % F.lit(1 << 30)).cast("double")
        bucket = F.when(bucket < 0, bucket + float(1 << 30)).otherwise(bucket)
        drawn = (bucket < F.lit(fraction * (1 << 30))) if fraction < 1 else F.lit(True)
        chosen = valid.select(*[by_name(c) for c in valid.columns], drawn.alias(DRAWN))
        if fraction < 1:
            keep = F.col(DRAWN) | (F.col(VERIFIED) >= 0) if VERIFIED in valid.columns else F.col(DRAWN)
            chosen = chosen.where(keep)
        return to_arrow(chosen)


@dataclass(frozen=True)
class Confident:
    """What makes an item confident in a view (core/cosine.confident): the moments' subset."""

    min_cosine: float
    margins: dict[str, float]


# items the driver keeps: the margin quantile (rank error ~0.5%), cotrain's rounds, the calibration
COTRAIN_SAMPLE = 10_000
DRAWN = "_pairspark_drawn"


def _merge(frame: pd.DataFrame) -> pd.DataFrame:
    """One group's partials in partition order: LabelStats summed, ClassMoments merged."""
    frame = frame.sort_values("part", kind="stable")
    first = frame.iloc[0]
    if first["kind"] == "s":
        total = None
        for payload in frame["payload"]:
            values = np.frombuffer(payload, dtype=np.float64)
            total = values.copy() if total is None else total + values
        count = 0
    else:
        parts = []
        for c, payload in zip(frame["count"], frame["payload"]):
            mean, m2 = np.frombuffer(payload, dtype=np.float64).reshape(2, 1, -1)
            parts.append(ClassMoments(np.array([c], dtype=np.int64), mean, m2))
        merged = merge_all(parts)
        total, count = np.concatenate([merged.mean[0], merged.m2[0]]), int(merged.count[0])
    return pd.DataFrame({"kind": [first["kind"]], "grp": [int(first["grp"])], "view": [first["view"]],
                         "class_index": [int(first["class_index"])], "count": [count], "payload": [total.tobytes()]})


def run_pass(valid: ItemRows, views: list[View], tables: dict[str, ClassTable], labeller: Labeller | None,
             confident_rule: Confident | None) -> tuple[dict[str, LabelStats] | None, tuple[dict[str, ClassMoments], int] | None]:
    """One read of the valid items: the sum of labeller's LabelStats per view (None without a
    labeller) and, with a confident rule, the confident moments per view (plus every verified item,
    in its verified class) and the number of valid items (None without)."""
    checks = view_checks(views, {v.name: tables[v.name].dim for v in views})
    n_classes = {v.name: len(tables[v.name].class_ids) for v in views}
    chunk = chunk_rows(max(n_classes.values()))

    def partial(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        part = TaskContext.get().partitionId()
        stats: dict[str, LabelStats] = {}
        moments = {v.name: ClassMoments.empty(n_classes[v.name], tables[v.name].dim) for v in views}
        rows_seen = 0
        for batch in valid_batches(batches, checks):
            rows_seen += batch.num_rows
            kept: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {v.name: [] for v in views}
            # row chunks, as classify's: a (rows x C) cosine or score array per view and method is
            # 800 MB for a 10,000-row batch at 10,000 classes (a fit's worker peaked at 5.5 GB)
            for start in range(0, batch.num_rows, chunk):
                piece = batch.slice(start, chunk)
                verified = verified_of(piece)
                xs, cosines = {}, {}
                for view in views:
                    x_unit, base = view_base(piece, view.column, tables[view.name])
                    xs[view.name], cosines[view.name] = x_unit, base.cosines
                    if confident_rule is not None:
                        # a verified item counts for its verified class, confident or not
                        keep = confident(base, confident_rule.min_cosine, confident_rule.margins[view.name]) | (verified >= 0)
                        kept[view.name].append((x_unit[keep], np.where(verified >= 0, verified, base.best)[keep]))
                if labeller is not None:
                    for name, new in labeller(xs, cosines, verified).items():
                        stats[name] = new if name not in stats else stats[name] + new
            if confident_rule is not None and batch.num_rows:  # one merge per batch, over its rows in order
                for view in views:
                    rows, labels = zip(*kept[view.name])
                    moments[view.name] = moments[view.name].merge(
                        ClassMoments.from_batch(np.concatenate(rows), np.concatenate(labels), n_classes[view.name]))
        out = []  # (kind, grp, view, class_index, count, payload), as _PARTIAL_SCHEMA without part
        for name in sorted(stats):
            out.append(("s", part // _GROUP, name, 0, 0, stats[name].to_flat().tobytes()))
        if confident_rule is not None:
            for view in views:
                m = moments[view.name]
                out += [("m", 0, view.name, int(c), int(m.count[c]), np.concatenate([m.mean[c], m.m2[c]]).tobytes())
                        for c in np.flatnonzero(m.count > 0)]
            out.append(("m", 0, views[0].name, _ROWS_SEEN, rows_seen, np.zeros(2 * tables[views[0].name].dim).tobytes()))
        if out:
            kinds, groups, names, classes, counts, payloads = zip(*out)
            yield pa.RecordBatch.from_arrays(
                [pa.array(kinds, pa.string()), pa.array(groups, pa.int32()), pa.array([part] * len(out), pa.int32()),
                 pa.array(names, pa.string()), pa.array(classes, pa.int32()), pa.array(counts, pa.int64()),
                 pa.array(payloads, pa.binary())],
                ["kind", "grp", "part", "view", "class_index", "count", "payload"])

    rows = (valid.map_batches(partial, _PARTIAL_SCHEMA).groupBy("kind", "grp", "view", "class_index")
            .applyInPandas(_merge, _MERGED_SCHEMA).collect())
    stats_out: dict[str, LabelStats] | None = None
    if labeller is not None:
        stats_out = {}
        for row in sorted((r for r in rows if r["kind"] == "s"), key=lambda r: (r["view"], r["grp"])):
            c, d = n_classes[row["view"]], tables[row["view"]].dim
            new = LabelStats.from_flat(np.frombuffer(row["payload"], dtype=np.float64), c, d)
            stats_out[row["view"]] = new if row["view"] not in stats_out else stats_out[row["view"]] + new
    if confident_rule is None:
        return stats_out, None
    out = {v.name: ClassMoments.empty(n_classes[v.name], tables[v.name].dim) for v in views}
    valid_items = 0
    for row in (r for r in rows if r["kind"] == "m"):
        if row["class_index"] == _ROWS_SEEN:
            valid_items += int(row["count"])
            continue
        moments, c = out[row["view"]], row["class_index"]
        mean, m2 = np.frombuffer(row["payload"], dtype=np.float64).reshape(2, -1)
        moments.count[c], moments.mean[c], moments.m2[c] = row["count"], mean, m2
    return stats_out, (out, valid_items)


@dataclass(frozen=True)
class Sample:
    """The driver's sample of the valid items: what cotrain's rounds, the calibration and the
    margin quantile are computed on."""

    xs: dict[str, np.ndarray]  # unit vectors per view
    verified: np.ndarray  # verified class index per row (-1 for none)
    margins: dict[str, np.ndarray]  # base best-minus-second cosine margin per row and view
    drawn: np.ndarray  # rows chosen by the hash draw (the verified rows are added whatever their hash)
    complete: bool  # every valid row (there were at most COTRAIN_SAMPLE rows)
    reads: int = 1  # reads of the items it took (2 when most rows were invalid: draw_sample)


def draw_sample(valid: ItemRows, views, tables, rows: int, seed: int) -> Sample:
    """A fixed random subset (about COTRAIN_SAMPLE items) of the valid rows, chosen by a hash of
    item_id (the same subset whatever the partitioning), plus every verified row. `rows`: the
    number of item rows (valid or not); when it is at most COTRAIN_SAMPLE the sample is every valid
    row. When most rows are invalid, so that the draw holds fewer than half of COTRAIN_SAMPLE valid
    rows, the draw is made again (one more read) at the fraction their count implies: a larger
    subset that contains the first, or every valid row when none was drawn."""
    fraction = min(1.0, COTRAIN_SAMPLE / max(rows, 1))
    sample = _draw(valid, views, tables, fraction, seed)
    drawn = int(sample.drawn.sum())
    if fraction < 1 and drawn < COTRAIN_SAMPLE // 2:
        log.info("sample: %d valid items drawn of %d rows; drawing again", drawn, rows)
        again = _draw(valid, views, tables, min(1.0, COTRAIN_SAMPLE * fraction / drawn) if drawn else 1.0, seed)
        sample = Sample(again.xs, again.verified, again.margins, again.drawn, again.complete, reads=2)
    return sample


def in_id_order(table: pa.Table) -> pa.Table:
    """The sample's rows ordered by item_id as a string: a collect returns them in partition order,
    and the calibration's folds (core/held_out.calibration_folds) are dealt by row position, so
    without one order the confidence would change with the partitioning and the reader. A valid
    item_id is unique (a repeated one is invalid), so the order is total on the rows kept."""
    if table.num_rows < 2:
        return table
    ids = table.column(ITEM_ID).cast(pa.large_string())
    return table.take(pc.sort_indices(ids))


def _draw(valid: ItemRows, views, tables, fraction: float, seed: int) -> Sample:
    checks = view_checks(views, {v.name: tables[v.name].dim for v in views})
    table = in_id_order(valid.drawn(fraction, seed))
    parts: dict[str, list] = {v.name: [] for v in views}
    margins: dict[str, list] = {v.name: [] for v in views}
    verified, flags = [], []
    chunk = chunk_rows(max(len(tables[v.name].class_ids) for v in views))  # on the driver, as in run_pass
    for batch in (b.slice(start, chunk) for b in valid_batches(table.to_batches(), checks)
                  for start in range(0, b.num_rows, chunk)):
        verified.append(verified_of(batch))
        flags.append(pc.fill_null(batch.column(DRAWN), False).to_numpy(zero_copy_only=False))
        for view in views:
            x_unit, base = view_base(batch, view.column, tables[view.name])
            parts[view.name].append(x_unit)
            margins[view.name].append(base.margin)

    def joined(arrays: list, empty: np.ndarray) -> np.ndarray:
        return np.concatenate(arrays) if arrays else empty

    return Sample({n: joined(p, np.zeros((0, tables[n].dim))) for n, p in parts.items()},
                  joined(verified, np.zeros(0, np.int64)),
                  {n: joined(m, np.zeros(0)) for n, m in margins.items()},
                  joined(flags, np.zeros(0, bool)).astype(bool), fraction >= 1)


class SparkPasses:
    """core/fitting.Passes over a DataFrame of items (with items.with_duplicate_flag's DUPLICATE): one Spark job
    per pass; invalid rows are skipped in the same Arrow batches. The sample is drawn once, before
    (draw_sample); the confident moments ride on the first stats pass (or take a pass of their own
    when `moments` is asked first)."""

    def __init__(self, valid: ItemRows, views: list[View], tables: dict[str, ClassTable], sample: Sample,
                 confident_rule: Confident):
        self._valid, self._views, self._tables, self._sample = valid, views, tables, sample
        self._confident = confident_rule
        self._moments: tuple[dict[str, ClassMoments], int] | None = None
        self.reads = 0  # passes over the items so far (the sample's draw not included)

    def stats(self, labeller: Labeller) -> dict[str, LabelStats]:
        self.reads += 1
        stats, moments = run_pass(self._valid, self._views, self._tables, labeller,
                                  self._confident if self._moments is None else None)
        self._moments = self._moments or moments
        assert stats is not None
        return stats

    def moments(self) -> tuple[dict[str, ClassMoments], int]:
        """The confident moments per view and the number of valid items."""
        if self._moments is None:
            self.reads += 1
            self._moments = run_pass(self._valid, self._views, self._tables, None, self._confident)[1]
        assert self._moments is not None
        return self._moments

    def sample(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return self._sample.xs, self._sample.verified
