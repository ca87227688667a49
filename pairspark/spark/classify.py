"""Classify: every item's base answer and tournament, in one mapInArrow over Arrow batches."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from pairspark.core.model import ViewModel, answer_margin, primary_method
from pairspark.spark.io import DUPLICATE, ITEM_ID, REASON, batch_matrix, batch_reasons, class_names

BRACKET_KEY = "_bracket_key"


ORIGINAL = "original"  # an invalid row's input columns, unchanged (null for a valid row)
_LABEL = "_label"


def prediction_fields(views: list[ViewModel], methods: tuple[str, ...], label_col: str | None) -> list[T.StructField]:
    fields = [T.StructField(ITEM_ID, T.StringType())]
    if label_col:
        fields.append(T.StructField(label_col, T.StringType()))
    for view in views:
        fields += [T.StructField(f"{view.name}_{m}", T.StringType()) for m in methods]
        fields += [T.StructField(f"{view.name}_class", T.StringType()), T.StructField(f"{view.name}_base_cosine", T.FloatType()),
                   T.StructField(f"{view.name}_margin", T.FloatType())]
    return fields


def classify_items(
    spark: SparkSession,
    marked: DataFrame,
    views: list[ViewModel],
    methods: tuple[str, ...],
    seed: int,
    label_col: str | None = None,
    candidates: int = 0,
    keep_input: bool = False,
) -> DataFrame:
    """One pass over io.mark_duplicates' output: a prediction row for every valid item, and for
    every invalid one a row with its REASON and its input columns, unchanged, in ORIGINAL
    (for every row with keep_input, as the pyspark.ml transform needs).

    Validation happens in the same Arrow batches as the math (core/validate.py), so quarantining
    costs no pass of its own; callers persist the result and split it into the two outputs.
    """
    input_columns = [c for c in marked.columns if c != DUPLICATE]
    keyed = marked.select(
        *input_columns,
        DUPLICATE,
        # Bracket key from (seed, item_id) in the JVM: stable across processes, unlike Python's hash().
        F.xxhash64(F.lit(int(seed)), F.col(ITEM_ID).cast("string")).alias(BRACKET_KEY),
        *([F.col(label_col).cast("string").alias(_LABEL)] if label_col else []),
    )
    for view in views:
        view.prepare(methods)  # computed once, on the driver, and broadcast with the masks
    broadcast = spark.sparkContext.broadcast(views)
    primary = primary_method(methods)
    fields = prediction_fields(views, methods, label_col)
    original_type = T.StructType([T.StructField(f.name, f.dataType, True) for f in marked.schema.fields if f.name in input_columns])
    schema = T.StructType(fields + [T.StructField(REASON, T.StringType()), T.StructField(ORIGINAL, original_type)])
    arrow_schema = to_arrow_schema(schema)
    checks = [(v.name, v.column, v.dim) for v in views]

    def classify_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        models: list[ViewModel] = broadcast.value
        for batch in batches:
            column = batch.schema.get_field_index
            reasons = batch_reasons(batch, checks)
            valid = pc.is_null(reasons)
            good = batch if reasons.null_count == batch.num_rows else batch.filter(valid)
            if good.num_rows:
                yield _predictions(good, models, methods, primary, label_col, candidates, arrow_schema, keep_input)
            if good.num_rows < batch.num_rows:
                bad = pc.invert(valid)
                n_bad = batch.num_rows - good.num_rows
                original = _original(batch.filter(bad), arrow_schema)
                ids = pc.cast(batch.column(column(ITEM_ID)), pa.string()).filter(bad)
                arrays = [ids] + [pa.nulls(n_bad, f.type) for f in arrow_schema][1:-2] + [reasons.filter(bad), original]
                yield pa.RecordBatch.from_arrays(arrays, schema=arrow_schema)

    return keyed.mapInArrow(classify_batches, schema)


def _original(batch: pa.RecordBatch, arrow_schema: pa.Schema) -> pa.StructArray:
    """The ORIGINAL struct: the batch's input columns, unchanged."""
    original_fields = list(arrow_schema.field(ORIGINAL).type)
    column = batch.schema.get_field_index
    return pa.StructArray.from_arrays([batch.column(column(f.name)).cast(f.type) for f in original_fields], fields=original_fields)


def _predictions(batch, models, methods, primary, label_col, candidates, arrow_schema, keep_input=False) -> pa.RecordBatch:
    column = batch.schema.get_field_index
    keys = batch.column(column(BRACKET_KEY)).to_numpy().view(np.uint64)
    arrays = [pc.cast(batch.column(column(ITEM_ID)), pa.string())]
    if label_col:
        arrays.append(pc.cast(batch.column(column(_LABEL)), pa.string()))
    for model in models:
        answers = model.classify(batch_matrix(batch, model.column, model.dim), keys, methods, candidates)
        for method in methods:
            arrays.append(class_names(model.class_ids, answers[method]))
        arrays += [class_names(model.class_ids, answers[primary]), pa.array(answers["base_cosine"], pa.float32()),
                   pa.array(answer_margin(answers, primary).astype(np.float32), pa.float32())]
    n = batch.num_rows
    original = _original(batch, arrow_schema) if keep_input else pa.nulls(n, arrow_schema.field(ORIGINAL).type)
    arrays += [pa.nulls(n, pa.string()), original]
    return pa.RecordBatch.from_arrays(arrays, schema=arrow_schema)
