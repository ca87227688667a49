"""What happens to the incoming item rows in Spark, in one place: their columns and dimensions
checked up front, the repeated-id flag, the split of answered rows into the valid ones and the
quarantine (on `reason`), and the invalid-row policy (--on-invalid quarantine|error) with its
error message.

Which rows are invalid, and why, is decided per Arrow batch in the workers (core/validate.py,
through core/batches.py and transform.batch_answers), in the same pass as the math. Only the
repeated ids need the whole input: they come from an aggregation of the id column alone (Spark
reads just that column), broadcast to a join or shipped to the workers, so the item rows
themselves are never shuffled. A repeat is the last check, as in core/validate.py's order.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pairspark.core.batches import batch_reasons, view_checks
from pairspark.core.columns import DUPLICATE, ITEM_ID, REASON
from pairspark.core.validate import DUPLICATE_ITEM_ID
from pairspark.errors import InvalidRowsError, UsageError
from pairspark.spark.io import by_name, require_columns, vector_column
from pairspark.views import View

# --on-invalid: set the bad rows aside with a reason (the default), or stop the run (exit 3)
QUARANTINE, ERROR = "quarantine", "error"
INVALID_SHOWN = 3  # bad rows an --on-invalid error names


# ---- checks before any pass (every problem here is fatal) ----

def require_item_columns(items: DataFrame, views: list[View]) -> None:
    """item_id and every view's column, or a usage error naming the missing ones."""
    require_columns(items, [ITEM_ID, *[v.column for v in views]], "items table")


def check_item_dims(items: DataFrame, views: list[View], dims: dict[str, int]) -> None:
    """Fail fast when the items' vectors have another length than the classes' (the first row tells)."""
    for view in views:
        vectors = vector_column(items, view.column, "items")
        first = items.where(vectors.isNotNull()).select(F.size(vectors).alias("d")).limit(1).collect()
        if first and first[0]["d"] != dims[view.name]:
            raise UsageError(
                f"view {view.name}: items column {view.column} has {first[0]['d']}-d vectors "
                f"but the classes' vectors are {dims[view.name]}-d"
            )


# ---- repeated item ids ----

def repeated_ids(items: DataFrame) -> DataFrame:
    """The item_ids that occur more than once, one row each (ITEM_ID, of the items' type), lazily:
    an aggregation of the id column alone. A null id never repeats (it has its own reason,
    null_item_id)."""
    return items.where(F.col(ITEM_ID).isNotNull()).groupBy(ITEM_ID).count().where(F.col("count") > 1).select(ITEM_ID)


def repeated_id_strings(items: DataFrame, limit: int) -> list[str]:
    """repeated_ids as strings, collected: at most `limit` of them (one id-only Spark job)."""
    rows = repeated_ids(items).select(F.col(ITEM_ID).cast("string").alias(ITEM_ID)).limit(limit).collect()
    return [r[0] for r in rows]


def with_duplicate_flag(items: DataFrame) -> DataFrame:
    """The items plus DUPLICATE (true where the item_id occurs more than once), lazily: the repeated
    ids are broadcast to the join, so the item rows themselves are never shuffled."""
    repeated = repeated_ids(items).select(ITEM_ID, F.lit(True).alias(DUPLICATE))
    joined = items.join(F.broadcast(repeated), ITEM_ID, "left")
    return joined.select(*[by_name(c) for c in items.columns], F.coalesce(F.col(DUPLICATE), F.lit(False)).alias(DUPLICATE))


def marked_vectors(items: DataFrame, views: list[View]) -> DataFrame:
    """ITEM_ID, each view column once as array<float|double> (a Vector column converted in the
    JVM), and DUPLICATE: the rows a fit (and fit's --on-invalid error) reads."""
    columns = list(dict.fromkeys(v.column for v in views))
    return with_duplicate_flag(items.select(ITEM_ID, *[vector_column(items, c, "items").alias(c) for c in columns]))


def set_repeated_aside(answered: DataFrame, items: DataFrame, id_column: str, answers: list[str]) -> DataFrame:
    """`answered` (rows checked for everything but the repeat: `id_column` the item_id as a string,
    REASON, the `answers` columns) with each row whose id repeats among `items` and that had no
    reason set aside last: reason duplicate_item_id, null answers. A row that already had a reason
    keeps it. Every column keeps its place. Lazy."""
    repeated = repeated_ids(items).select(F.col(ITEM_ID).cast("string").alias(id_column), F.lit(True).alias(DUPLICATE))
    joined = answered.join(F.broadcast(repeated), id_column, "left")
    duplicate = F.col(DUPLICATE).isNotNull() & F.col(REASON).isNull()

    def column(name: str) -> Column:
        if name == REASON:
            return F.when(duplicate, F.lit(DUPLICATE_ITEM_ID)).otherwise(F.col(REASON)).alias(REASON)
        if name in answers:
            return F.when(duplicate, F.lit(None).cast(answered.schema[name].dataType)).otherwise(by_name(name)).alias(name)
        return by_name(name)

    return joined.select(*[column(c) for c in answered.columns])


# ---- the quarantine: a split of the answered rows on REASON ----

def is_set_aside() -> Column:
    """True for a row with a reason (the quarantine's), false for a valid one."""
    return F.col(REASON).isNotNull()


def valid_rows(answered: DataFrame) -> DataFrame:
    """The rows with no reason (the predictions'); a frame without REASON is all valid."""
    return answered.where(F.col(REASON).isNull()) if REASON in answered.columns else answered


def set_aside_rows(answered: DataFrame, columns: list[str]) -> DataFrame:
    """The rows with a reason: `columns`, then REASON."""
    return answered.where(is_set_aside()).select(*[by_name(c) for c in columns], REASON)


def count_by_reason(quarantine: DataFrame) -> dict[str, int]:
    """Rows per reason of a quarantine (one small aggregation)."""
    return {r[REASON]: r["count"] for r in quarantine.groupBy(REASON).count().collect()}


# ---- --on-invalid error ----

def invalid_rows_error(where: str, rows: list[tuple[str | None, str]]) -> InvalidRowsError:
    """The error an --on-invalid error run stops with, naming the first bad rows (item_id, reason)."""
    shown = ", ".join(f"item_id={item!r} ({reason})" for item, reason in rows)
    return InvalidRowsError(f"invalid item rows in {where}, first: {shown}; use --on-invalid quarantine to set them aside")


def first_invalid(marked: DataFrame, views: list[View], dims: dict[str, int], limit: int = INVALID_SHOWN) -> list[tuple[str, str]]:
    """The first `limit` bad rows of `marked` (with_duplicate_flag's) by item_id, a null id first,
    each with the reason the quarantine would give it: an extra pass, only --on-invalid error asks."""
    checks = view_checks(views, dims)

    def bad_rows(batches):
        for batch in batches:
            reasons = batch_reasons(batch, checks)
            bad = pc.invert(pc.is_null(reasons))
            if pc.any(bad).as_py():
                ids = pc.cast(batch.column(batch.schema.get_field_index(ITEM_ID)), pa.string())
                yield pa.RecordBatch.from_arrays([ids.filter(bad), reasons.filter(bad)], [ITEM_ID, REASON])

    rows = (
        marked.select(ITEM_ID, *dict.fromkeys(v.column for v in views), DUPLICATE)
        .mapInArrow(bad_rows, f"{ITEM_ID} string, {REASON} string")
        .orderBy(F.col(ITEM_ID).asc_nulls_first())
        .limit(limit)
        .collect()
    )
    return [(r[ITEM_ID], r[REASON]) for r in rows]


def first_set_aside(quarantine: DataFrame, limit: int = INVALID_SHOWN) -> list[tuple[str, str]]:
    """The first `limit` rows of a quarantine by item_id, a null id first: (item_id, reason)."""
    bad = quarantine.where(is_set_aside()).select(ITEM_ID, REASON).orderBy(F.col(ITEM_ID).asc_nulls_first()).limit(limit)
    return [(r[ITEM_ID], r[REASON]) for r in bad.collect()]


def stop_on_invalid_items(items: DataFrame, views: list[View], dims: dict[str, int], where: str) -> None:
    """--on-invalid error before a fit: raise naming the first bad rows of the items, if any."""
    bad = first_invalid(marked_vectors(items, views), views, dims)
    if bad:
        raise invalid_rows_error(where, bad)


def stop_on_set_aside(quarantine: DataFrame, where: str) -> None:
    """--on-invalid error after classify's one pass: raise naming the first rows set aside, if any."""
    bad = first_set_aside(quarantine)
    if bad:
        raise invalid_rows_error(where, bad)
