"""Reading and validating inputs, and Arrow <-> numpy conversion for the batch kernels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pairspark.config import View
from pairspark.core.cosine import base_assign, unit_rows64
from pairspark.core.validate import row_reasons
from pairspark.errors import UsageError

ITEM_ID = "item_id"
CLASS_ID = "class_id"
REASON = "reason"  # why an item row is quarantined (null for a valid row): see core/validate.py


def read_parquet(spark: SparkSession, path: str, what: str) -> DataFrame:
    try:
        return spark.read.parquet(path)
    except AnalysisException as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot read {what} from {path}: {first_line}") from None


def require_columns(df: DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UsageError(f"{what} has no column(s) {', '.join(missing)}; it has {', '.join(df.columns)}")


def _require_vector_type(df: DataFrame, column: str, what: str) -> None:
    dtype = df.schema[column].dataType
    if not (isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, (T.FloatType, T.DoubleType))):
        raise UsageError(f"{what} column {column} must be array<float> or array<double>, got {dtype.simpleString()}")


@dataclass(frozen=True)
class ClassTable:
    """The classes of one view, sorted by class_id: ids and unit prompt vectors (C, D)."""

    class_ids: list[str]
    vectors: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def class_column(classes: DataFrame, view: View) -> str:
    """The classes table's column for a view: its NAME, or else the items' COL."""
    for candidate in (view.name, view.column):
        if candidate in classes.columns:
            return candidate
    raise UsageError(
        f"the classes table has no column {view.name!r} (or {view.column!r}) for view {view.name}; "
        f"it has {', '.join(classes.columns)}"
    )


def load_classes(spark: SparkSession, path: str, views: list[View]) -> dict[str, ClassTable]:
    """Collect and check the (small) classes table; every problem here is fatal."""
    classes = read_parquet(spark, path, "classes")
    require_columns(classes, [CLASS_ID], f"classes table {path}")
    columns = {v.name: class_column(classes, v) for v in views}
    for column in columns.values():
        _require_vector_type(classes, column, "classes")
    rows = classes.select(CLASS_ID, *sorted(set(columns.values()))).toPandas()
    ids = rows[CLASS_ID]
    if ids.isna().any():
        raise UsageError(f"classes table {path} has a null class_id")
    duplicated = sorted(set(ids[ids.duplicated()]))
    if duplicated:
        raise UsageError(f"classes table {path} repeats class_id {', '.join(map(str, duplicated[:5]))}")
    if len(rows) < 2:
        raise UsageError(f"classes table {path} has {len(rows)} class(es); at least 2 are needed")
    rows = rows.sort_values(CLASS_ID, kind="stable").reset_index(drop=True)
    out = {}
    for view in views:
        column = columns[view.name]
        vectors = rows[column]
        bad = [cid for cid, v in zip(rows[CLASS_ID], vectors) if v is None or len(v) == 0]
        if bad:
            raise UsageError(f"classes column {column} is null or empty for class {bad[0]}")
        lengths = {len(v) for v in vectors}
        if len(lengths) != 1:
            raise UsageError(f"classes column {column} has vectors of different lengths {sorted(lengths)}")
        matrix = np.stack([np.asarray(v, dtype=np.float64) for v in vectors])
        if not np.isfinite(matrix).all():
            raise UsageError(f"classes column {column} holds NaN, infinity or null elements")
        norms = np.linalg.norm(matrix, axis=1)
        if (norms == 0).any():
            raise UsageError(f"classes column {column} is a zero vector for class {rows[CLASS_ID][int(np.argmin(norms))]}")
        out[view.name] = ClassTable(list(map(str, rows[CLASS_ID])), (matrix / norms[:, None]).astype(np.float32))
    return out


DUPLICATE = "_duplicate"  # true where the row's item_id occurs more than once in the input
_BROADCAST_IDS = 1_000_000


def mark_duplicates(items: DataFrame, views: list[View]) -> DataFrame:
    """The items' rows, unchanged, plus DUPLICATE. Finding repeats shuffles only the ids; the
    marking is a broadcast join when they are few, and a constant when there are none."""
    require_columns(items, [ITEM_ID] + [v.column for v in views], "items table")
    for view in views:
        _require_vector_type(items, view.column, "items")
    duplicated = items.where(F.col(ITEM_ID).isNotNull()).groupBy(ITEM_ID).count().where(F.col("count") > 1)
    n_duplicated = duplicated.count()
    if n_duplicated == 0:
        return items.withColumn(DUPLICATE, F.lit(False))
    flags = duplicated.select(ITEM_ID, F.lit(True).alias(DUPLICATE))
    joined = items.join(F.broadcast(flags) if n_duplicated <= _BROADCAST_IDS else flags, ITEM_ID, "left")
    return joined.select(*items.columns, F.coalesce(F.col(DUPLICATE), F.lit(False)).alias(DUPLICATE))


def batch_reasons(batch: pa.RecordBatch, checks: list[tuple[str, str, int]]) -> pa.Array:
    """validate.row_reasons for a batch of mark_duplicates' output; checks: (view, column, dim)."""
    column = batch.schema.get_field_index
    return row_reasons(
        batch.column(column(ITEM_ID)),
        [(name, batch.column(column(col)), dim) for name, col, dim in checks],
        batch.column(column(DUPLICATE)),
    )


def view_checks(views: list[View], dims: dict[str, int]) -> list[tuple[str, str, int]]:
    return [(v.name, v.column, dims[v.name]) for v in views]


def first_invalid(marked: DataFrame, views: list[View], dims: dict[str, int], limit: int = 3) -> list[tuple[str, str]]:
    """The first `limit` bad rows by item_id (an extra pass: only --on-invalid error asks)."""
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


def require_rows(df: DataFrame, what: str) -> None:
    if not df.limit(1).count():
        raise UsageError(f"{what} has no rows")


def check_item_dims(items: DataFrame, views: list[View], dims: dict[str, int]) -> None:
    """Fail fast when the items' vectors have another length than the classes' (the first row tells)."""
    for view in views:
        first = items.where(F.col(view.column).isNotNull()).select(F.size(view.column).alias("d")).limit(1).collect()
        if first and first[0]["d"] != dims[view.name]:
            raise UsageError(
                f"view {view.name}: items column {view.column} has {first[0]['d']}-d vectors "
                f"but the classes' vectors are {dims[view.name]}-d"
            )


def batch_matrix(batch: pa.RecordBatch, column: str, dim: int) -> np.ndarray:
    """Zero-copy (n, dim) float32 view of a validated list<float> column."""
    array = batch.column(batch.schema.get_field_index(column))
    values = array.flatten()  # honours slice offsets, unlike .values
    if values.null_count or len(values) != len(array) * dim:
        raise ValueError(f"column {column} was not validated: {len(values)} values for {len(array)} rows of {dim}")
    return values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(array), dim)


def list_array(matrix: np.ndarray, value_type: pa.DataType = pa.float64()) -> pa.ListArray:
    """(n, d) numpy matrix -> Arrow list array of n rows."""
    n, d = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(matrix).reshape(-1), type=value_type))


def class_names(class_ids: list[str], index: np.ndarray) -> pa.Array:
    """Class index array -> Arrow string array (dictionary decode in C++, no Python loop)."""
    dictionary = pa.array(class_ids, type=pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(index, type=pa.int32()), dictionary).dictionary_decode()


def valid_batches(batches, checks: list[tuple[str, str, int]]):
    """Only the rows core/validate.py accepts (checked here, in the same pass as the math)."""
    for batch in batches:
        reasons = batch_reasons(batch, checks)
        if reasons.null_count == batch.num_rows:
            yield batch  # the usual case: no copy
        elif reasons.null_count:
            yield batch.filter(pc.is_null(reasons))


def view_base(batch: pa.RecordBatch, column: str, table: ClassTable):
    """(unit rows, BaseAssignment) of one view of a batch; float64 as in ViewModel.classify, so fit
    and classify give every item the same base answer."""
    x_unit = unit_rows64(batch_matrix(batch, column, table.dim))
    return x_unit, base_assign(x_unit, table.vectors.astype(np.float64))
