"""Parquet items read by pyarrow inside the Python workers: the CLI's fast reader, for classify
(ArrowScan.classified) and for fit's sample and passes (ArrowRows).

Why: to hand an array<float> column to Python, Spark converts every element of every row into an
Arrow vector; on the bench catalog that is two thirds of a Spark scan of the vectors
(../shared/docs/SCAN-FLOOR.md). pyarrow reads the same Parquet pages straight into Arrow buffers.
Measured on the bench catalog (300k x 768, two views, local[2]): reading the vectors in the workers
took 2.6 s against 9.7 s for Spark's mapInArrow scan, and the default classify went from 0.44x to
1.27x of that scan.

What stays in Spark: the task list (`spark.range`, one task per Parquet row group: the unit
Spark's own reader splits on), the duplicate-id check (an aggregation of the id column alone,
broadcast to a join), the quarantine's rows (read back by Spark in Spark's own types, and only
when some row is invalid), and every write.

The answers are those of `model.transform`, bit for bit: the same per-batch function
(transform.batch_answers, so the same validation and kernels), the same bracket keys
(core/tournament.bracket_keys reproduces the JVM's xxhash64), and the duplicate flag applied last,
as it is last in core/validate.py's order. A row is named by (file, row index in the file), which
is also what Spark's `_metadata.row_index` gives, so a quarantined row is found again exactly.

Eligible (`eligibility`): a Parquet path whose files are `file:` URIs that this process can open
(a local run, or a file system mounted on every node), item_id (and the label column) of string
or integer type (their cast to string is the same in Arrow and Spark), array<float|double> view
columns present in every file. Otherwise the CLI uses Spark's reader (`--items-reader auto`) or
stops with the reason (`--items-reader arrow`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pairspark.core.columns import DUPLICATE, ITEM_ID, REASON, VERIFIED
from pairspark.core.model import ViewModel
from pairspark.core.tournament import bracket_keys
from pairspark.spark.compat import create_frame, to_arrow
from pairspark.spark.io import by_name
from pairspark.spark.items import repeated_id_strings, set_aside_rows, set_repeated_aside
from pairspark.spark.passes import DRAWN, BatchFn, drawn_mask
from pairspark.spark.transform import answer_fields, batch_answers

# columns of the classified frame besides the answers (the CLI's names for the id and the label)
FILE = "_pairspark_file"
ROW = "_pairspark_row"
_PATH = "_pairspark_path"
_TASK = "id"  # spark.range's column

_ID_TYPES = (T.StringType, T.ByteType, T.ShortType, T.IntegerType, T.LongType)


@dataclass(frozen=True)
class ArrowScan:
    """The row groups of a Parquet source, one task each: (file index, row group, its first row)."""

    files: tuple[str, ...]  # local paths, in the order of the items' inputFiles()
    splits: tuple[tuple[int, int, int], ...]
    items: DataFrame  # spark.read.parquet of the same path: schema, duplicates, quarantine rows

    def classified(self, view_models: list[ViewModel], methods: tuple[str, ...], seed: int, candidates: int | str, top_k: int,
                   id_column: str, label: tuple[str, str] | None, batch_rows: int, backoff_at: float = 0.9) -> DataFrame:
        """Lazily: per item row, `id_column` (item_id as a string), the label as a string (label:
        (items column, output name)), answer_fields, FILE and ROW; every check of core/validate.py
        but the duplicate one (with_duplicates). No Spark job runs here."""
        classify = batch_answers(view_models, methods, candidates, top_k, self.items.sparkSession, backoff_at)
        fields = answer_fields(view_models, methods)
        columns = [ITEM_ID, *dict.fromkeys(v.column for v in view_models)] + ([label[0]] if label else [])
        columns = list(dict.fromkeys(columns))
        names = [id_column] + ([label[1]] if label else []) + [f.name for f in fields] + [FILE, ROW]
        files, splits, seed = self.files, self.splits, int(seed)
        view_columns = [v.column for v in view_models]  # run's closure holds no view (ShippedViews)

        def run(tasks):
            for task in tasks:
                for index in task.column(0).to_pylist():
                    file_index, row_group, first_row = splits[index]
                    reader = pq.ParquetFile(files[file_index])
                    row = first_row
                    for batch in reader.iter_batches(batch_size=batch_rows, row_groups=[row_group], columns=columns,
                                                     use_threads=False):
                        ids = batch.column(ITEM_ID)
                        text_ids = ids if pa.types.is_string(ids.type) else ids.cast(pa.string())
                        answers = classify(ids, bracket_keys(text_ids, seed), None, [batch.column(c) for c in view_columns])
                        out = [text_ids]
                        if label:
                            values = batch.column(label[0])
                            out.append(values if pa.types.is_string(values.type) else values.cast(pa.string()))
                        out += answers.flatten()
                        out += [pa.array(np.full(len(ids), file_index, np.int32)),
                                pa.array(np.arange(row, row + len(ids), dtype=np.int64))]
                        row += len(ids)
                        yield pa.RecordBatch.from_arrays(out, names)

        spark = self.items.sparkSession
        schema = T.StructType([T.StructField(id_column, T.StringType())]
                              + ([T.StructField(label[1], T.StringType())] if label else [])
                              + fields + [T.StructField(FILE, T.IntegerType()), T.StructField(ROW, T.LongType())])
        return spark.range(0, len(splits), 1, max(1, len(splits))).mapInArrow(run, schema)

    def with_duplicates(self, classified: DataFrame, id_column: str, answers: list[str]) -> DataFrame:
        """`classified` with repeated ids set aside (reason duplicate_item_id, null answers) where
        nothing else was wrong: last, as in core/validate.py (spark/items.set_repeated_aside over the
        items' repeated ids). `answers`: the columns nulled for such a row. Lazy."""
        return set_repeated_aside(classified, self.items, id_column, answers)

    def set_aside(self, classified: DataFrame) -> DataFrame:
        """The invalid rows of `classified` as the items hold them (every column, Spark's types)
        plus REASON: found again by (file, row index). Runs one small job (the files' names as
        Spark writes them) when some row is invalid; none otherwise."""
        bad = set_aside_rows(classified, [FILE, ROW])
        columns = [by_name(c) for c in self.items.columns]
        if bad.limit(1).count() == 0:
            return self.items.select(*columns, F.lit(None).cast("string").alias(REASON)).limit(0)
        spark = self.items.sparkSession
        names = [r[0] for r in self.items.select(F.col("_metadata.file_path").alias(_PATH)).distinct().collect()]
        where = {path: i for i, path in enumerate(self.files)}
        table = pa.table({_PATH: pa.array(names, pa.string()),
                          FILE: pa.array([where.get(local_path(n), -1) for n in names], pa.int32())})
        lookup = create_frame(spark, table, T.StructType([T.StructField(_PATH, T.StringType()), T.StructField(FILE, T.IntegerType())]))
        source = self.items.select(*columns, F.col("_metadata.file_path").alias(_PATH), F.col("_metadata.row_index").alias(ROW))
        return (source.join(F.broadcast(lookup), _PATH).join(bad, [FILE, ROW])
                .select(*columns, F.col(REASON)))

    def fit_rows(self, columns: list[str], labels: pa.Table | None, batch_rows: int,
                 max_repeated: int = 1_000_000) -> ArrowRows | None:
        """The fit's ItemRows read by pyarrow (ArrowRows), or None when more than `max_repeated` ids
        repeat (they travel to every task in the closure: then Spark's reader and its join).
        `labels`: read_labels' table (item_id, class_index). One id-only Spark job finds the
        repeated ids (spark/items.repeated_ids, as with_duplicates)."""
        repeated = repeated_id_strings(self.items, max_repeated + 1)
        if len(repeated) > max_repeated:
            return None
        verified = None if labels is None else (labels.column(ITEM_ID).combine_chunks(),
                                                labels.column("class_index").combine_chunks())
        return ArrowRows(self, tuple(columns), pa.array(repeated, pa.string()), verified, batch_rows)


@dataclass(frozen=True)
class ArrowRows:
    """spark/passes.ItemRows read by pyarrow in the workers: one task per row group (as ArrowScan),
    each batch marked in the worker as the Spark path's join marks it (DUPLICATE from the repeated
    ids, VERIFIED from the labels, both shipped in the closure). Why: a fit reads the vectors twice
    (the sample's draw, then one pass), and Spark's conversion of array<float> to Arrow is most of
    a read (the module docstring; docs/PERFORMANCE.md)."""

    scan: ArrowScan
    columns: tuple[str, ...]  # the view columns
    repeated: pa.Array  # item ids (as strings) that occur more than once
    labels: tuple[pa.Array, pa.Array] | None  # verified labels: item_id (string), class_index (int32)
    batch_rows: int

    def _read(self):
        files, splits, columns, batch_rows = self.scan.files, self.scan.splits, [ITEM_ID, *self.columns], self.batch_rows
        repeated, labels = self.repeated, self.labels

        def read(tasks):
            for task in tasks:
                for index in task.column(0).to_pylist():
                    file_index, row_group, _ = splits[index]
                    reader = pq.ParquetFile(files[file_index])
                    for batch in reader.iter_batches(batch_size=batch_rows, row_groups=[row_group], columns=columns,
                                                     use_threads=False):
                        ids = batch.column(ITEM_ID)
                        ids = ids if pa.types.is_string(ids.type) else ids.cast(pa.string())
                        arrays = [ids] + [_as_list(batch.column(c)) for c in columns[1:]]
                        arrays.append(pc.is_in(ids, value_set=repeated))
                        names = [*columns, DUPLICATE]
                        if labels is not None:
                            at = pc.index_in(ids, value_set=labels[0])
                            arrays.append(pc.fill_null(pc.take(labels[1], at), pa.scalar(-1, pa.int32())))
                            names.append(VERIFIED)
                        yield pa.RecordBatch.from_arrays(arrays, names)

        return read

    def _frame(self, fn: BatchFn, schema) -> DataFrame:
        read, n = self._read(), len(self.scan.splits)
        return self.scan.items.sparkSession.range(0, n, 1, max(1, n)).mapInArrow(lambda tasks: fn(read(tasks)), schema)

    def map_batches(self, fn: BatchFn, schema: str) -> DataFrame:
        return self._frame(fn, schema)

    def drawn(self, fraction: float, seed: int) -> pa.Table:
        schema = T.StructType(
            [T.StructField(ITEM_ID, T.StringType())]
            + [T.StructField(c, T.ArrayType(self.scan.items.schema[c].dataType.elementType)) for c in self.columns]
            + [T.StructField(DUPLICATE, T.BooleanType())]
            + ([T.StructField(VERIFIED, T.IntegerType())] if self.labels is not None else [])
            + [T.StructField(DRAWN, T.BooleanType())])
        seed = int(seed)

        def draw(batches):
            for batch in batches:
                chosen = drawn_mask(batch.column(ITEM_ID), fraction, seed)
                keep = chosen.copy()
                if VERIFIED in batch.schema.names:
                    keep |= batch.column(VERIFIED).to_numpy(zero_copy_only=False) >= 0
                if keep.any():
                    out = pa.RecordBatch.from_arrays([*batch.columns, pa.array(chosen)], [*batch.schema.names, DRAWN])
                    yield out if keep.all() else out.filter(pa.array(keep))

        return to_arrow(self._frame(draw, schema))


def _as_list(column: pa.Array) -> pa.Array:
    """A large_list vector column as a list one (Spark's array type is a list's)."""
    return column.cast(pa.list_(column.type.value_type)) if pa.types.is_large_list(column.type) else column


def _text_type(dtype: pa.DataType) -> bool:
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_integer(dtype)


def _vector_type(dtype: pa.DataType) -> bool:
    return ((pa.types.is_list(dtype) or pa.types.is_large_list(dtype))
            and (pa.types.is_float32(dtype.value_type) or pa.types.is_float64(dtype.value_type)))


def local_path(uri: str) -> str:
    """A file: URI (file:/a/b, file:///a/b, percent-encoded) as a local path."""
    return os.path.normpath(unquote(urlparse(uri).path))


def eligibility(items: DataFrame, columns: list[str], text_columns: list[str]) -> ArrowScan | str:
    """An ArrowScan of a Parquet source, or why it cannot be read that way. `columns`: the vector
    columns; `text_columns`: item_id and the label column (cast to string on the way out)."""
    schema = items.schema
    if "_metadata" in items.columns:
        return "the items have a column named _metadata"
    absent = [name for name in dict.fromkeys(text_columns + columns) if name not in items.columns]
    if absent:  # the caller's own check says so, in its words
        return f"the items have no column(s) {', '.join(absent)}"
    for name in text_columns:
        if not isinstance(schema[name].dataType, _ID_TYPES):
            return f"column {name} is {schema[name].dataType.simpleString()}, not a string or an integer"
    for name in columns:
        dtype = schema[name].dataType
        if not (isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, (T.FloatType, T.DoubleType))):
            return f"column {name} is {dtype.simpleString()}, not array<float|double>"
    uris = items.inputFiles()
    if not uris:
        return "the items path holds no files"
    remote = [u for u in uris if urlparse(u).scheme != "file"]
    if remote:
        return f"{remote[0]} is not a file: path"
    files = tuple(local_path(u) for u in uris)
    splits = []
    wanted = list(dict.fromkeys(text_columns + columns))
    for index, path in enumerate(files):
        try:
            meta = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as exc:
            return f"cannot open {path} here: {exc}"
        arrow_schema = meta.schema_arrow
        missing = [c for c in wanted if c not in arrow_schema.names]
        if missing:
            return f"{path} has no column(s) {', '.join(missing)} (a partition column, or another casing)"
        for name in wanted:  # what this file holds, which Spark's one schema for all files may not say
            dtype = arrow_schema.field(name).type
            if not (_text_type(dtype) if name in text_columns else _vector_type(dtype)):
                return f"{path} holds {name} as {dtype}"
            if name in columns and pa.types.is_float32(dtype.value_type) != isinstance(schema[name].dataType.elementType,
                                                                                    T.FloatType):
                return f"{path} holds {name} as {dtype}, other files not (Spark reads them as one type)"
        first = 0
        for group in range(meta.num_row_groups):
            rows = meta.metadata.row_group(group).num_rows
            if rows:
                splits.append((index, group, first))
            first += rows
    return ArrowScan(files, tuple(splits), items)
