"""The review queue: the items a person should look at before their class is written.

A nightly job writes NAME_class where it can trust it and sends the rest to a person. An item
joins the queue (OUT/review) for any of these reasons (`reasons`, in this order):

* label_contradicts_views: the label column names a class that no view gives;
* views_disagree: two views, two different classes;
* low_confidence: the primary view's (the first view's) NAME_confidence is below `below`;
* backoff_above_leaf (with a class tree): the primary view's NAME_backoff stops above its leaf
  (the leaf is less than backoffAt likely); the queue then also says, per item, the level at which
  the two views' paths part (`disagree_level`, null where they agree) and holds each NAME_path and
  NAME_backoff.

`change_probability` ranks the queue by how likely a look changes something: 1.0 when the label
contradicts every view (the label or the answer is wrong), else 1 - the primary view's
confidence (the chance its answer, the one that would be written, is wrong). Ties: item_id.
Quarantined rows are not in the predictions, so never here (OUT/quarantine lists them).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pairspark.core.columns import (ITEM_ID, TOP_CLASS, TOP_SCORE, backoff_col, class_col, confidence_col, path_col,
                                    top_col)
from pairspark.spark.items import valid_rows

REASONS = ("label_contradicts_views", "views_disagree", "low_confidence", "backoff_above_leaf")
# --review-below: auto-apply at confidence >= 0.9, the level the calibration goal asks to be at
# least 90% right (docs/METHOD.md, "Confidence")
DEFAULT_BELOW = 0.9


def review_items(predictions: DataFrame, view_names: list[str], label_col: str | None, below: float) -> DataFrame:
    """The queue, best first: item_id, change_probability, reasons, the label, and per view
    NAME_class, NAME_confidence, NAME_top."""
    df = valid_rows(predictions)
    cls = [F.col(class_col(v)) for v in view_names]
    primary = F.col(confidence_col(view_names[0]))
    label = F.col(label_col).cast("string") if label_col else None
    flags: list[tuple[str, Column]] = [
        (REASONS[0], (label.isNotNull() & ~F.coalesce(F.array_contains(F.array(*cls), label), F.lit(False)))
         if label is not None else F.lit(False)),
        (REASONS[1], (cls[0] != cls[1]) if len(view_names) == 2 else F.lit(False)),
        (REASONS[2], primary.isNull() | (primary < F.lit(float(below)))),
    ]
    tree = path_col(view_names[0]) in predictions.columns
    if tree:
        backoff = F.col(backoff_col(view_names[0]))
        flags.append((REASONS[3], backoff.isNull() | (backoff != cls[0])))
    reasons = F.filter(F.array(*[F.when(flag, F.lit(name)) for name, flag in flags]), lambda r: r.isNotNull())
    change = F.when(flags[0][1], F.lit(1.0)).otherwise(1.0 - F.coalesce(primary.cast("double"), F.lit(0.0)))
    columns = [F.col(ITEM_ID), change.alias("change_probability"), reasons.alias("reasons")]
    if label_col:
        columns.append(F.col(label_col))
    if tree and len(view_names) == 2:
        same = F.zip_with(F.col(path_col(view_names[0])), F.col(path_col(view_names[1])), lambda a, b: a == b)
        first = F.array_position(same, False)
        columns.append(F.when(first > 0, first.cast("int")).alias("disagree_level"))
    for v in view_names:
        columns += [F.col(class_col(v)), F.col(confidence_col(v)), F.col(top_col(v))]
        if tree:
            columns += [F.col(path_col(v)), F.col(backoff_col(v))]
    return (df.select(*columns).where(F.size("reasons") > 0)
            .orderBy(F.col("change_probability").desc(), F.col(ITEM_ID).asc()))


def csv_frame(queue: DataFrame) -> DataFrame:
    """The queue with its arrays as text, for a spreadsheet: reasons joined by ';', NAME_top as
    'class:score;...'."""
    out = []
    for field in queue.schema.fields:
        name = field.name
        if name == "reasons":
            out.append(F.concat_ws(";", F.col(name)).alias(name))
        elif name.endswith(path_col("")):
            out.append(F.concat_ws(" > ", F.col(name)).alias(name))
        elif name.endswith(top_col("")):
            pairs = F.transform(F.col(name), lambda t: F.concat(t[TOP_CLASS], F.lit(":"), F.format_number(t[TOP_SCORE], 4)))
            out.append(F.concat_ws(";", pairs).alias(name))
        else:
            out.append(F.col(name))
    return queue.select(*out)
