"""The driver's reads: the items and classes tables (checked on read), the verified labels, and the
Spark column helpers around them. The per-batch Arrow/numpy helpers the workers run are
core/batches.py; what happens to invalid and repeated item rows is spark/items.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.errors import AnalysisException
from pyspark.ml.functions import vector_to_array
from pyspark.ml.linalg import VectorUDT
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pairspark.views import View
from pairspark.core.batches import ClassTable
from pairspark.core.columns import CLASS_ID, ITEM_ID, PARENT_ID, VERIFIED
from pairspark.core.cosine import ensemble_prompts
from pairspark.core.tree import Tree
from pairspark.errors import UsageError
from pairspark.spark.compat import create_frame, to_arrow

TABLE_PREFIX = "table:"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_parquet(spark: SparkSession, path: str, what: str) -> DataFrame:
    try:
        return spark.read.parquet(path)
    except AnalysisException as exc:
        raise UsageError(f"cannot read {what} from {path}: {_first_line(exc)}") from None


def read_source(spark: SparkSession, source: str, what: str, fmt: str | None = None) -> DataFrame:
    """A table of the session's catalog (`table:NAME`) or a path: Parquet, or any format
    `spark.read.format` knows (orc, json, csv, delta where the cluster has it)."""
    if source.startswith(TABLE_PREFIX):
        name = source[len(TABLE_PREFIX):].strip()
        if not name:
            raise UsageError(f"{what}: table: needs a table name, got {source!r}")
        if fmt:
            raise UsageError(f"{what}: a format applies to a path, not to {source}")
        try:
            frame = spark.table(name)
            frame.columns  # resolve now (a Connect session resolves lazily)
            return frame
        except AnalysisException as exc:
            raise UsageError(f"{what} table {name} cannot be read: {_first_line(exc)}") from None
    try:
        frame = spark.read.format(fmt or "parquet").load(source)
        frame.columns
        return frame
    except AnalysisException as exc:
        raise UsageError(f"cannot read {what} from {source}: {_first_line(exc)}") from None
    except Exception as exc:  # an unknown format is a ClassNotFound wrapped per Spark version and session kind
        if "DATA_SOURCE_NOT_FOUND" in str(exc) or "Failed to find data source" in str(exc):
            raise UsageError(f"{what}: unknown format {fmt!r} (Spark has no data source of that name)") from None
        raise


def arrow_batch_rows(spark: SparkSession) -> int:
    """The session's rows per Arrow batch (Spark reads 0 or less as no limit)."""
    rows = int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch", "10000"))
    return rows if rows > 0 else 1 << 30


def by_name(name: str) -> Column:
    """A column by its exact name (names holding dots or spaces are not paths here)."""
    return F.col("`" + name.replace("`", "``") + "`")


def vector_column(df: DataFrame, column: str, what: str) -> Column:
    """The column as array<float|double>: array columns as they are, a pyspark.ml Vector column
    (what Spark ML pipelines produce) converted in the JVM; any other type is a usage error."""
    dtype = df.schema[column].dataType
    quoted = by_name(column)
    if isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, (T.FloatType, T.DoubleType)):
        return quoted
    if isinstance(dtype, VectorUDT):
        return vector_to_array(quoted, "float64")
    raise UsageError(f"{what} column {column} must be array<float>, array<double> or a pyspark.ml Vector, "
                     f"got {dtype.simpleString()}")


def require_columns(df: DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UsageError(f"{what} has no column(s) {', '.join(missing)}; it has {', '.join(df.columns)}")


def class_column(classes: DataFrame, view: View) -> str:
    """The classes table's column for a view: its NAME, or else the items' COL."""
    for candidate in (view.name, view.column):
        if candidate in classes.columns:
            return candidate
    raise UsageError(
        f"the classes table has no column {view.name!r} (or {view.column!r}) for view {view.name}; "
        f"it has {', '.join(classes.columns)}"
    )


def load_classes(spark: SparkSession, path: str, views: list[View], fmt: str | None = None) -> dict[str, ClassTable]:
    """Collect and check the (small) classes table; every problem here is fatal."""
    classes = read_source(spark, path, "classes", fmt)
    require_columns(classes, [CLASS_ID], f"classes table {path}")
    columns = {v.name: class_column(classes, v) for v in views}
    parent = [F.col(PARENT_ID).cast("string").alias(PARENT_ID)] if PARENT_ID in classes.columns else []
    rows = classes.select(CLASS_ID, *parent, *[vector_column(classes, c, "classes").alias(c)
                                               for c in sorted(set(columns.values()))]).toPandas()
    ids = rows[CLASS_ID]
    if ids.isna().any():
        raise UsageError(f"classes table {path} has a null class_id")
    rows = rows.sort_values(CLASS_ID, kind="stable").reset_index(drop=True)
    tree = None
    if parent:  # a taxonomy: the classes are its leaves; the inner nodes' prompts are not read (METHOD.md "Trees")
        tree = class_tree(rows, path)
        rows = rows[rows[CLASS_ID].astype(str).isin(set(tree.leaf_ids))].reset_index(drop=True)
    codes, class_ids = pd.factorize(rows[CLASS_ID].astype(str), sort=False)  # sorted order: of first appearance
    prompts = np.bincount(codes, minlength=len(class_ids))
    if len(class_ids) < 2:
        raise UsageError(f"classes table {path} has {len(class_ids)} class(es); at least 2 are needed")
    out = {}
    for view in views:
        column = columns[view.name]
        vectors = rows[column]
        bad = [cid for cid, v in zip(rows[CLASS_ID], vectors) if v is None or len(v) == 0]
        if bad and tree is not None:
            raise UsageError(f"classes column {column} is null or empty for leaf {bad[0]} of the class tree: a leaf "
                             "needs a prompt in every view (an inner node may have none)")
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
        vectors = ensemble_prompts(codes, matrix / norms[:, None], len(class_ids))
        cancelled = np.flatnonzero(~vectors.any(axis=1))
        if len(cancelled):
            raise UsageError(f"classes column {column}: the prompts of class {class_ids[cancelled[0]]} cancel out (their mean is 0)")
        out[view.name] = ClassTable(list(map(str, class_ids)), vectors.astype(np.float32), tuple(int(c) for c in prompts),
                                    tree)
    return out


def class_tree(rows: pd.DataFrame, path: str) -> Tree:
    """The taxonomy of a classes table's (class_id, parent_id) rows: a class may have several
    prompt rows, all with the same parent. Every problem is a one-line UsageError."""
    parents: dict[str, str | None] = {}
    for cid, parent in zip(rows[CLASS_ID].astype(str), rows[PARENT_ID]):
        parent = None if parent is None or (isinstance(parent, float) and np.isnan(parent)) else str(parent)
        if cid in parents and parents[cid] != parent:
            raise UsageError(f"classes table {path}: class {cid!r} has rows with different parent_id "
                             f"({parents[cid]!r} and {parent!r}); a node of the tree has one parent")
        parents[cid] = parent
    return Tree.of(list(parents), list(parents.values()), f"classes table {path}")


def require_rows(df: DataFrame, what: str) -> None:
    if not df.limit(1).count():
        raise UsageError(f"{what} has no rows")


# ---- verified labels (--labels / labelsPath) ----


def read_labels(spark: SparkSession, path: str, class_ids: list[str]) -> pa.Table:
    """The verified labels as (item_id string, label string, class index int32), one row per item:
    a Parquet file, or CSV with a header when the path ends in .csv. A usage error (one line) for
    a missing column, a null, an item labelled twice with different classes, or a label that is
    not a class_id."""
    fmt = "csv" if path.lower().rstrip("/").endswith(".csv") else "parquet"
    reader = spark.read.option("header", "true") if fmt == "csv" else spark.read
    try:
        frame = reader.format(fmt).load(path)
        frame.columns
    except AnalysisException as exc:
        raise UsageError(f"cannot read labels from {path}: {_first_line(exc)}") from None
    require_columns(frame, [ITEM_ID, "label"], f"labels {path}")
    table = to_arrow(frame.select(F.col(ITEM_ID).cast("string").alias(ITEM_ID), F.col("label").cast("string").alias("label"))
                     .distinct())
    ids, labels = table.column(ITEM_ID).to_pylist(), table.column("label").to_pylist()
    nulls = sum(1 for i, lab in zip(ids, labels) if i is None or lab is None)
    if nulls:
        raise UsageError(f"labels {path}: {nulls} row(s) with a null item_id or label")
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise UsageError(f"labels {path}: {len(twice)} item(s) labelled with two classes, e.g. item_id={twice[0]!r}")
    index = {c: i for i, c in enumerate(class_ids)}
    unknown = sorted({lab for lab in labels if lab not in index})
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:3])
        raise UsageError(f"labels {path}: {len(unknown)} label(s) that are not a class_id of the classes table: {shown}")
    return pa.table({ITEM_ID: pa.array(ids, pa.string()), "label": pa.array(labels, pa.string()),
                     "class_index": pa.array([index[lab] for lab in labels], pa.int32())})


def labels_frame(spark: SparkSession, labels: pa.Table) -> DataFrame:
    return create_frame(spark, labels, T.StructType([T.StructField(ITEM_ID, T.StringType()), T.StructField("label", T.StringType()),
                                                     T.StructField("class_index", T.IntegerType())]))


def with_verified(items: DataFrame, labels: pa.Table) -> tuple[DataFrame, dict]:
    """The items (item_id, vectors, ...) plus VERIFIED (a verified row's class index, -1 for the
    others), through a broadcast join of the small labels table; and how many labelled ids the
    items hold (one id-only job)."""
    spark = items.sparkSession
    frame = labels_frame(spark, labels)
    joined = items.join(F.broadcast(frame.select(F.col(ITEM_ID).alias("_lid"), "class_index")),
                        F.col(ITEM_ID).cast("string") == F.col("_lid"), "left")
    marked = joined.select(*[by_name(c) for c in items.columns], F.coalesce(F.col("class_index"), F.lit(-1)).alias(VERIFIED))
    ids = items.select(F.col(ITEM_ID).cast("string").alias(ITEM_ID)).distinct()
    matched = frame.join(ids, ITEM_ID, "left_semi").count()
    return marked, {"given": labels.num_rows, "matched": int(matched), "not_among_items": labels.num_rows - int(matched)}
