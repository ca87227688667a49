"""The model's transform as one lazy column expression: a scalar Arrow UDF returning a struct.

Only what the math needs crosses to Python (item_id, the bracket key, the duplicate flag and the
view vectors); every input column stays in the JVM and is kept as it is. The fitted views travel
in the UDF's closure (prepared on the driver: pair coefficients, masks, scorers), which works the
same on a classic and on a Spark Connect session; nothing is broadcast through a SparkContext and
no session setting is changed. Building the expression runs no Spark job.

Per row the struct holds, for every view, NAME_<method> per method, NAME_class (the primary
method's answer), NAME_base_cosine, NAME_margin, NAME_confidence (the calibrated probability of
NAME_class) and NAME_top (the primary's top-k classes with their probabilities), then `reason`:
why the row could not be classified (core/validate.py; its answers are then null), null for a
valid row. A quarantine is therefore a `where` on `reason`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pairspark.core.batches import batch_matrix, class_names
from pairspark.core.classify import classify as classify_view
from pairspark.core.columns import DUPLICATE, ITEM_ID, REASON, TOP_CLASS, TOP_SCORE, answer_names
from pairspark.core.methods import prepare, primary_method
from pairspark.core.model import ViewModel
from pairspark.core.validate import row_reasons
from pairspark.errors import UsageError
from pairspark.spark.compat import arrow_scalar_udf
from pairspark.spark.io import by_name, vector_column
from pairspark.spark.items import with_duplicate_flag

_ANSWERS = "_pairspark_answers"


TOP_TYPE = T.ArrayType(T.StructType([T.StructField(TOP_CLASS, T.StringType()), T.StructField(TOP_SCORE, T.FloatType())]))
_TOP_ARROW = pa.list_(pa.struct([pa.field(TOP_CLASS, pa.string()), pa.field(TOP_SCORE, pa.float32())]))


def answer_fields(view_models: list[ViewModel], methods: tuple[str, ...]) -> list[T.StructField]:
    """The columns transform adds, in order (REASON last): core/columns.answer_names with their types."""
    per_view = [T.StringType()] * len(methods) + [T.StringType(), T.FloatType(), T.FloatType(), T.FloatType(), TOP_TYPE]
    types = [t for _ in view_models for t in per_view] + [T.StringType()]
    return [T.StructField(name, dtype) for name, dtype in zip(answer_names([v.name for v in view_models], methods), types)]


def answer_columns(view_models: list[ViewModel], methods: tuple[str, ...]) -> list[str]:
    """The names of answer_fields but REASON: the columns nulled for a row set aside."""
    return [name for name in answer_names([v.name for v in view_models], methods) if name != REASON]


def _arrow_type(dtype: T.DataType) -> pa.DataType:
    return {T.StringType(): pa.string(), T.FloatType(): pa.float32()}.get(dtype, _TOP_ARROW)


def top_array(class_ids: list[str], top: np.ndarray, top_p: np.ndarray) -> pa.Array:
    """NAME_top: per row a list of (class_id, score) structs, highest score first."""
    n, k = top.shape
    names = class_names(class_ids, top.reshape(-1))
    structs = pa.StructArray.from_arrays([names, pa.array(top_p.reshape(-1).astype(np.float32), pa.float32())],
                                         fields=list(_TOP_ARROW.value_type))
    return pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)), structs, type=_TOP_ARROW)


def bracket_key(seed: int) -> Column:
    """xxhash64(seed, item_id) computed in the JVM: stable across processes, unlike Python's hash()."""
    return F.xxhash64(F.lit(int(seed)), F.col(ITEM_ID).cast("string"))


BatchAnswers = Callable[[pa.Array, np.ndarray, "pa.Array | None", list[pa.Array]], pa.StructArray]


def batch_answers(view_models: list[ViewModel], methods: tuple[str, ...], candidates: int | str, top_k: int = 3) -> BatchAnswers:
    """The per-batch function behind every classify path (this module's UDF, spark/arrow_scan.py):
    f(ids, keys, duplicate, vectors) -> StructArray of answer_fields. `ids`: the item ids (any
    type; only their nulls are read), `keys`: uint64 bracket keys, `duplicate`: bool array or None,
    `vectors`: one list<float|double> array per view. Prepares the views on the driver first."""
    for view in view_models:
        prepare(view, methods)
    primary = primary_method(methods)
    fields = answer_fields(view_models, methods)
    arrow_fields = [pa.field(f.name, _arrow_type(f.dataType)) for f in fields]

    def classify(ids: pa.Array, keys: np.ndarray, duplicate: pa.Array | None, vectors: list[pa.Array]) -> pa.StructArray:
        n = len(ids)
        reasons = row_reasons(ids, [(v.name, col, v.dim) for v, col in zip(view_models, vectors)], duplicate)
        valid = pc.is_null(reasons)
        all_valid = reasons.null_count == n
        # positions of the valid rows in the classified subset; -1 (null) for the others
        if all_valid:
            spread = None
        else:
            valid_np = valid.to_numpy(zero_copy_only=False)
            position = np.full(n, -1, np.int64)
            position[valid_np] = np.arange(int(valid_np.sum()))
            spread = pa.array(position, mask=position < 0)
        item_keys = keys if all_valid else keys[valid.to_numpy(zero_copy_only=False)]
        arrays: list[pa.Array] = []
        for view, column in zip(view_models, vectors):
            column = column if all_valid else column.filter(valid)
            x = batch_matrix(pa.RecordBatch.from_arrays([column], [view.column]), view.column, view.dim)
            answers = classify_view(view, x, item_keys, methods, candidates, margin_of=primary, k=top_k)
            subset = [class_names(view.class_ids, answers[m]) for m in methods]
            subset += [class_names(view.class_ids, answers[primary]), pa.array(answers["base_cosine"], pa.float32()),
                       pa.array(answers["margin"].astype(np.float32), pa.float32()),
                       pa.array(answers["confidence"].astype(np.float32), pa.float32()),
                       top_array(view.class_ids, answers["top"], answers["top_p"])]
            arrays += subset if spread is None else [a.take(spread) for a in subset]
        arrays.append(reasons)
        return pa.StructArray.from_arrays(arrays, fields=arrow_fields)

    return classify


def answers_column(view_models: list[ViewModel], methods: tuple[str, ...], seed: int, candidates: int | str, top_k: int,
                   vectors: list[Column] | None = None) -> Column:
    """The struct of answer_fields for each row of a frame holding ITEM_ID, DUPLICATE and the views'
    vectors (`vectors`: one array<float|double> expression per view; default: the views' columns)."""
    classify = batch_answers(view_models, methods, candidates, top_k)
    struct_type = T.StructType(answer_fields(view_models, methods))

    def on_batch(ids: pa.Array, keys: pa.Array, duplicate: pa.Array, *vectors: pa.Array) -> pa.StructArray:
        return classify(ids, keys.to_numpy(zero_copy_only=False).view(np.uint64), duplicate, list(vectors))

    vectors = vectors or [by_name(v.column) for v in view_models]
    udf = arrow_scalar_udf(on_batch, struct_type, array_args=range(3, 3 + len(vectors)))
    return udf(F.col(ITEM_ID).cast("string"), bracket_key(seed), F.col(DUPLICATE), *vectors)


def transform_items(items: DataFrame, view_models: list[ViewModel], methods: tuple[str, ...], seed: int, candidates: int | str,
                    top_k: int = 3) -> DataFrame:
    """The items, every column kept, plus answer_fields. Lazy: no Spark job runs here."""
    missing = [c for c in [ITEM_ID, *dict.fromkeys(v.column for v in view_models)] if c not in items.columns]
    if missing:
        raise UsageError(f"the items have no column(s) {', '.join(missing)}; they have {', '.join(items.columns)}")
    vectors = [vector_column(items, view.column, "items") for view in view_models]
    added = answer_names([v.name for v in view_models], methods)
    clash = [c for c in added if c in items.columns]
    if clash:
        raise UsageError(f"the items already have the output column(s) {', '.join(clash)}: rename or drop them first")
    marked = with_duplicate_flag(items)
    answered = marked.select(*[by_name(c) for c in items.columns], answers_column(view_models, methods, seed, candidates, top_k, vectors).alias(_ANSWERS))
    return answered.select(*[by_name(c) for c in items.columns], *[F.col(_ANSWERS)[name].alias(name) for name in added])
