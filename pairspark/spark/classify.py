"""Classify: every item's base answer and tournament, in one mapInArrow over Arrow batches."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pairspark.core.model import ViewModel
from pairspark.spark.io import ITEM_ID, REASON, batch_matrix, class_names

BRACKET_KEY = "_bracket_key"


def primary_method(methods: tuple[str, ...]) -> str:
    """The method whose answer becomes NAME_class: pairwise when it runs, else the first."""
    return "pairwise" if "pairwise" in methods else methods[0]


def prediction_schema(views: list[ViewModel], methods: tuple[str, ...], label_col: str | None) -> str:
    fields = [f"{ITEM_ID} string"]
    if label_col:
        fields.append(f"`{label_col}` string")
    for view in views:
        fields += [f"{view.name}_{m} string" for m in methods]
        fields += [f"{view.name}_class string", f"{view.name}_base_cosine float"]
    return ", ".join(fields)


def classify_items(
    spark: SparkSession,
    prepared: DataFrame,
    views: list[ViewModel],
    methods: tuple[str, ...],
    seed: int,
    label_col: str | None = None,
    candidates: int = 0,
) -> DataFrame:
    """Predictions for the valid rows of `prepared` (see io.prepare_items)."""
    # Bracket key from (seed, item_id) in the JVM: stable across processes, unlike Python's hash().
    keyed = prepared.where(F.col(REASON).isNull()).select(
        ITEM_ID,
        *([F.col(label_col).cast("string").alias(label_col)] if label_col else []),
        F.xxhash64(F.lit(int(seed)), F.col(ITEM_ID)).alias(BRACKET_KEY),
        *sorted({v.column for v in views}),
    )
    for view in views:
        view.coefficients  # computed once, on the driver, and broadcast with the masks
    broadcast = spark.sparkContext.broadcast(views)
    primary = primary_method(methods)

    def classify_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        models: list[ViewModel] = broadcast.value
        for batch in batches:
            keys = batch.column(batch.schema.get_field_index(BRACKET_KEY)).to_numpy().view(np.uint64)
            arrays = [batch.column(batch.schema.get_field_index(ITEM_ID))]
            names = [ITEM_ID]
            if label_col:
                arrays.append(batch.column(batch.schema.get_field_index(label_col)))
                names.append(label_col)
            for model in models:
                answers = model.classify(batch_matrix(batch, model.column, model.dim), keys, methods, candidates)
                for method in methods:
                    arrays.append(class_names(model.class_ids, answers[method]))
                    names.append(f"{model.name}_{method}")
                arrays += [class_names(model.class_ids, answers[primary]), pa.array(answers["base_cosine"], pa.float32())]
                names += [f"{model.name}_class", f"{model.name}_base_cosine"]
            yield pa.RecordBatch.from_arrays(arrays, names)

    return keyed.mapInArrow(classify_batches, prediction_schema(views, methods, label_col))
