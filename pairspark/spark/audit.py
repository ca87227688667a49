"""Likely annotation errors (audit) and what changed since the last run (diff), from predictions.

Audit score, per item (documented in README.md, "Audit"):
  confidence of a view = its calibrated NAME_confidence (core/calibration.py); predictions made
  before it existed use the rank of NAME_margin among all items' margins in that view, in [0, 1]
  (from 1,000 approximate quantiles: margins of different methods have different scales);
  * label_contradicted_by_both_views: the two views agree with each other, not with the label:
    raw = 1 + min(confidence of the two views)   (so these rank above the kinds below), plus 1
    when both views' zero-shot answers (NAME_base, when the predictions have them) name the same
    class too: every answer the embeddings give contradicts the label. The learned answers of two
    views are trained together and can share a mistake; the zero-shot ones never trained at all,
    so an item they confirm has the strongest case against its label. Such an item may still be
    rightly labelled (its embeddings sit in another class's region): the audit cannot tell, and
    lists it with the label errors for a person to check
  * label_matches_neither_view: the views disagree and neither matches the label: raw = min(confidences)
  * views_disagree: the views disagree (one may match the label): raw = min(confidences)
  * label_contradicted_by_view (one view only): score = its confidence
With two views, score = raw * (1 - share), share = the fraction of the items with the same key
(the label; without one, the first view's class) that get the same pair of answers. A confusion
most of a class shares (every "jean" called "trousers") is the model's or the taxonomy's, not one
item's annotation error; a rare one is a likely label error (the idea behind confident
learning's per-class noise rates).
Items with no such conflict are not listed. Ties: item_id ascending.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pairspark.core.columns import ITEM_ID, class_col, confidence_col, margin_col, method_col

QUANTILES = 1000
KINDS = ("label_contradicted_by_both_views", "label_matches_neither_view", "views_disagree", "label_contradicted_by_view")


def _confidence(df: DataFrame, view: str) -> DataFrame:
    column = margin_col(view)
    finite = df.where(F.col(column).isNotNull() & ~F.isnan(column) & (F.abs(F.col(column)) < float("inf")))
    probabilities = [i / QUANTILES for i in range(1, QUANTILES)]
    edges = np.asarray(finite.approxQuantile(column, probabilities, 1.0 / QUANTILES) or [0.0], dtype=np.float64)

    @F.pandas_udf("double")
    def rank(margin: pd.Series) -> pd.Series:
        values = margin.to_numpy(dtype=np.float64, na_value=np.nan)
        ranks = np.searchsorted(edges, values, side="right") / len(edges)
        return pd.Series(np.where(np.isnan(values), 0.0, np.clip(ranks, 0.0, 1.0)))

    return df.withColumn(confidence_col(view), rank(F.col(column)))


def audit_predictions(predictions: DataFrame, view_names: list[str], label_col: str | None) -> DataFrame:
    """Flagged items: item_id, kind, score, the label, per view NAME_class and NAME_confidence,
    sorted by score descending then item_id (see the module docstring)."""
    if len(view_names) < 2 and not label_col:
        raise ValueError("an audit needs two views or a label column")
    df = predictions
    for view in view_names:
        if confidence_col(view) not in df.columns:
            df = _confidence(df, view)
    cls = [F.col(class_col(v)) for v in view_names]
    conf = [F.col(confidence_col(v)) for v in view_names]
    label = F.col(label_col) if label_col else F.lit(None).cast("string")
    has_label = label.isNotNull()
    if len(view_names) == 2:
        agree = cls[0] == cls[1]
        low = F.least(*conf)
        off_both = has_label & (cls[0] != label) & (cls[1] != label)
        kind = (F.when(off_both & agree, KINDS[0]).when(off_both, KINDS[1]).when(~agree, KINDS[2]))
        zero_shot = [method_col(v, "base") for v in view_names]
        unanimous = ((F.col(zero_shot[0]) == cls[0]) & (F.col(zero_shot[1]) == cls[0])
                     if all(c in df.columns for c in zero_shot) else F.lit(False))
        score = (F.when(off_both & agree, 1.0 + low + F.coalesce(unanimous, F.lit(False)).cast("double"))
                 .when(kind.isNotNull(), low))
    else:
        kind = F.when(has_label & (cls[0] != label), KINDS[3])
        score = F.when(kind.isNotNull(), conf[0])
    if len(view_names) == 2:
        # Systematic confusions are discounted: share = the fraction of the items with the same
        # key (the label, or the first view's class without one) that show the same pair of answers.
        key = F.coalesce(label, cls[0]) if label_col else cls[0]
        df = df.withColumn("_key", key)
        pattern = df.groupBy("_key", *[class_col(v) for v in view_names]).count().withColumnRenamed("count", "_pattern")
        per_key = df.groupBy("_key").count().withColumnRenamed("count", "_key_count")
        df = df.join(pattern, ["_key", *[class_col(v) for v in view_names]], "left").join(per_key, "_key", "left")
        score = score * (1.0 - F.col("_pattern") / F.col("_key_count"))
    columns = [ITEM_ID, kind.alias("kind"), score.alias("score")]
    if label_col:
        columns.append(F.col(label_col))
    for view in view_names:
        columns += [F.col(class_col(view)), F.col(confidence_col(view))]
    return df.select(*columns).where(F.col("kind").isNotNull()).orderBy(F.col("score").desc(), F.col(ITEM_ID).asc())


def with_item_columns(ranked: DataFrame, items: DataFrame, columns: list[str], rank: str = "score") -> DataFrame:
    """A ranked list (the audit's, the review queue's) with extra columns of the items table (e.g. a
    product name), its order (`rank` descending, then item_id) kept."""
    if not columns:
        return ranked
    extra = items.select(F.col(ITEM_ID).cast("string").alias(ITEM_ID), *columns).dropDuplicates([ITEM_ID])
    return ranked.join(extra, ITEM_ID, "left").orderBy(F.col(rank).desc(), F.col(ITEM_ID).asc())


@contextmanager
def diff_predictions(old: DataFrame, new: DataFrame, view_names: list[str]) -> Iterator[tuple[DataFrame, dict]]:
    """Items whose NAME_class changed between two prediction sets (one row per item and view:
    item_id, view, old_class, new_class), and counts: items in both (compared), only in the new
    (added) or only in the old (removed), changes per view and per (view, old, new).

    A context manager: the join both come from stays persisted until the block ends, so write
    the changes inside it (they are lazy; the summary is computed on entry)."""
    o = old.select(ITEM_ID, F.lit(True).alias("_in_old"), *[F.col(class_col(v)).alias(f"{v}_old") for v in view_names])
    n = new.select(ITEM_ID, F.lit(True).alias("_in_new"), *[F.col(class_col(v)).alias(f"{v}_new") for v in view_names])
    joined = o.join(n, ITEM_ID, "full_outer").persist(StorageLevel.MEMORY_AND_DISK)
    try:
        presence = joined.groupBy(F.col("_in_old").isNotNull().alias("old"), F.col("_in_new").isNotNull().alias("new")).count().collect()
        count = {(r["old"], r["new"]): int(r["count"]) for r in presence}
        changes = None
        for v in view_names:
            part = joined.where(F.col(f"{v}_old").isNotNull() & F.col(f"{v}_new").isNotNull() & (F.col(f"{v}_old") != F.col(f"{v}_new")))
            part = part.select(ITEM_ID, F.lit(v).alias("view"), F.col(f"{v}_old").alias("old_class"), F.col(f"{v}_new").alias("new_class"))
            changes = part if changes is None else changes.unionByName(part)
        changes = changes.orderBy("view", ITEM_ID)
        pairs = (changes.groupBy("view", "old_class", "new_class").count()
                 .orderBy(F.col("count").desc(), "view", "old_class", "new_class").collect())
        summary = {
            "compared": count.get((True, True), 0),
            "added": count.get((False, True), 0),
            "removed": count.get((True, False), 0),
            "changed": {v: sum(int(r["count"]) for r in pairs if r["view"] == v) for v in view_names},
            "by_pair": [{"view": r["view"], "old_class": r["old_class"], "new_class": r["new_class"], "count": int(r["count"])}
                        for r in pairs],
        }
        yield changes, summary
    finally:
        joined.unpersist()
