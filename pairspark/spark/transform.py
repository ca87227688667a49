"""The model's transform as one lazy column expression: a scalar Arrow UDF returning a struct.

Only what the math needs crosses to Python (item_id, the bracket key, the duplicate flag and the
view vectors); every input column stays in the JVM and is kept as it is. The fitted views travel
in the UDF's closure (prepared on the driver: pair coefficients, masks, scorers) while they are
small; above SHIP_BY_FILE_BYTES by reference: a file the session ships to the workers (a Connect
request is capped at 128 MiB, and a 10,000-class model is ~400 MB), read once per Python worker
(ShippedViews). Either way works the same on a classic and a Spark Connect session; no session
setting is changed. Building the expression runs no Spark job.

Per row the struct holds, for every view, NAME_<method> per method, NAME_class (the primary
method's answer), NAME_base_cosine, NAME_margin, NAME_confidence (the calibrated probability of
NAME_class) and NAME_top (the primary's top-k classes with their probabilities), then `reason`:
why the row could not be classified (core/validate.py; its answers are then null), null for a
valid row. A quarantine is therefore a `where` on `reason`.
"""

from __future__ import annotations

import pickle
import threading
from collections import OrderedDict
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
from pairspark.spark.compat import arrow_scalar_udf, ship_bytes, shipped_path
from pairspark.spark.io import by_name, vector_column
from pairspark.spark.items import with_duplicate_flag

_ANSWERS = "_pairspark_answers"


TOP_TYPE = T.ArrayType(T.StructType([T.StructField(TOP_CLASS, T.StringType()), T.StructField(TOP_SCORE, T.FloatType())]))
_TOP_ARROW = pa.list_(pa.struct([pa.field(TOP_CLASS, pa.string()), pa.field(TOP_SCORE, pa.float32())]))


def model_answer_names(view_models: list[ViewModel], methods: tuple[str, ...]) -> list[str]:
    """core/columns.answer_names of these views (with the path columns when they have a class tree)."""
    return answer_names([v.name for v in view_models], methods, tree=bool(view_models) and view_models[0].tree is not None)


def answer_fields(view_models: list[ViewModel], methods: tuple[str, ...]) -> list[T.StructField]:
    """The columns transform adds, in order (REASON last): model_answer_names with their types."""
    per_view = [T.StringType()] * len(methods) + [T.StringType(), T.FloatType(), T.FloatType(), T.FloatType(), TOP_TYPE]
    if view_models and view_models[0].tree is not None:
        per_view += [T.ArrayType(T.StringType()), T.ArrayType(T.FloatType()), T.StringType()]
    types = [t for _ in view_models for t in per_view] + [T.StringType()]
    return [T.StructField(name, dtype) for name, dtype in zip(model_answer_names(view_models, methods), types)]


def answer_columns(view_models: list[ViewModel], methods: tuple[str, ...]) -> list[str]:
    """The names of answer_fields but REASON: the columns nulled for a row set aside."""
    return [name for name in model_answer_names(view_models, methods) if name != REASON]


def _arrow_type(dtype: T.DataType) -> pa.DataType:
    return {T.StringType(): pa.string(), T.FloatType(): pa.float32(), T.ArrayType(T.StringType()): pa.list_(pa.string()),
            T.ArrayType(T.FloatType()): pa.list_(pa.float32())}.get(dtype, _TOP_ARROW)


def path_arrays(view: ViewModel, answers: np.ndarray, path_confidence: np.ndarray, backoff: np.ndarray) -> list[pa.Array]:
    """NAME_path (node ids, root first), NAME_path_confidence (float32, as long) and NAME_backoff
    (a node id, null for none) of a batch's answers (class indices) under view.tree."""
    tree = view.tree
    paths = tree.leaf_paths()[answers]
    present = paths >= 0
    offsets = pa.array(np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int32))
    names = np.asarray(tree.node_ids, dtype=object)
    path = pa.ListArray.from_arrays(offsets, pa.array(names[paths[present]], pa.string()))
    confidence = pa.ListArray.from_arrays(offsets, pa.array(path_confidence[present].astype(np.float32), pa.float32()))
    back = pa.array(np.where(backoff >= 0, names[np.maximum(backoff, 0)], None), pa.string())
    return [path, confidence, back]


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


# Prepared views whose pickle is larger than this reach the workers as a shipped file, not in the
# closure: far below Connect's 128 MiB request limit, and above every model of up to ~256 classes
# at 768 dims (a closure is re-sent with every task; a file is fetched once per worker).
SHIP_BY_FILE_BYTES = 32 * 2**20
_LOADED: OrderedDict[str, list[ViewModel]] = OrderedDict()
_LOADED_MAX = 2
_LOADED_LOCK = threading.Lock()


class ShippedViews:
    """The prepared views as a task's closure holds them: by value, or by the name of the file
    ship_bytes shipped them in (pickled with it: only the name). A worker loads a shipped model
    once and keeps it (with what its methods built on first use, e.g. the pair cache) for every
    task after."""

    def __init__(self, views: list[ViewModel], spark=None):
        self._views: list[ViewModel] | None = views
        self.name: str | None = None
        if spark is not None:
            blob = pickle.dumps(views, protocol=pickle.HIGHEST_PROTOCOL)
            if len(blob) > SHIP_BY_FILE_BYTES:
                self.name = ship_bytes(spark, blob, ".views.pkl")
                with _LOADED_LOCK:  # this process already holds them
                    _LOADED[self.name] = views

    def __getstate__(self) -> dict:
        return {"_views": None if self.name else self._views, "name": self.name}

    def get(self) -> list[ViewModel]:
        if self._views is None:
            self._views = _load_shipped(self.name)
        return self._views


def _load_shipped(name: str) -> list[ViewModel]:
    with _LOADED_LOCK:
        views = _LOADED.get(name)
        if views is None:
            with open(shipped_path(name), "rb") as shipped:
                views = _LOADED[name] = pickle.load(shipped)
            while len(_LOADED) > _LOADED_MAX:
                _LOADED.popitem(last=False)
        _LOADED.move_to_end(name)
        return views


BatchAnswers = Callable[[pa.Array, np.ndarray, "pa.Array | None", list[pa.Array]], pa.StructArray]


def batch_answers(view_models: list[ViewModel], methods: tuple[str, ...], candidates: int | str, top_k: int = 3,
                  spark=None, backoff_at: float = 0.9) -> BatchAnswers:
    """The per-batch function behind every classify path (this module's UDF, spark/arrow_scan.py):
    f(ids, keys, duplicate, vectors) -> StructArray of answer_fields. `ids`: the item ids (any
    type; only their nulls are read), `keys`: uint64 bracket keys, `duplicate`: bool array or None,
    `vectors`: one list<float|double> array per view. Prepares the views on the driver first; with
    `spark`, a large model is shipped by reference (ShippedViews)."""
    for view in view_models:
        prepare(view, methods)
    shipped = ShippedViews(view_models, spark)  # the closure below holds this, never view_models
    checks = [(v.name, v.dim) for v in view_models]
    primary = primary_method(methods)
    fields = answer_fields(view_models, methods)
    arrow_fields = [pa.field(f.name, _arrow_type(f.dataType)) for f in fields]

    def classify(ids: pa.Array, keys: np.ndarray, duplicate: pa.Array | None, vectors: list[pa.Array]) -> pa.StructArray:
        n = len(ids)
        reasons = row_reasons(ids, [(name, col, dim) for (name, dim), col in zip(checks, vectors)], duplicate)
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
        for view, column in zip(shipped.get(), vectors):
            column = column if all_valid else column.filter(valid)
            x = batch_matrix(pa.RecordBatch.from_arrays([column], [view.column]), view.column, view.dim)
            answers = classify_view(view, x, item_keys, methods, candidates, margin_of=primary, k=top_k,
                                    backoff_at=backoff_at)
            subset = [class_names(view.class_ids, answers[m]) for m in methods]
            subset += [class_names(view.class_ids, answers[primary]), pa.array(answers["base_cosine"], pa.float32()),
                       pa.array(answers["margin"].astype(np.float32), pa.float32()),
                       pa.array(answers["confidence"].astype(np.float32), pa.float32()),
                       top_array(view.class_ids, answers["top"], answers["top_p"])]
            if view.tree is not None:
                subset += path_arrays(view, answers[primary], answers["path_confidence"], answers["backoff"])
            arrays += subset if spread is None else [a.take(spread) for a in subset]
        arrays.append(reasons)
        return pa.StructArray.from_arrays(arrays, fields=arrow_fields)

    return classify


def answers_column(view_models: list[ViewModel], methods: tuple[str, ...], seed: int, candidates: int | str, top_k: int,
                   vectors: list[Column] | None = None, spark=None, backoff_at: float = 0.9) -> Column:
    """The struct of answer_fields for each row of a frame holding ITEM_ID, DUPLICATE and the views'
    vectors (`vectors`: one array<float|double> expression per view; default: the views' columns).
    `spark`: the session the column will run in (a large model is shipped to it by reference)."""
    classify = batch_answers(view_models, methods, candidates, top_k, spark, backoff_at)
    struct_type = T.StructType(answer_fields(view_models, methods))

    def on_batch(ids: pa.Array, keys: pa.Array, duplicate: pa.Array, *vectors: pa.Array) -> pa.StructArray:
        return classify(ids, keys.to_numpy(zero_copy_only=False).view(np.uint64), duplicate, list(vectors))

    vectors = vectors or [by_name(v.column) for v in view_models]
    udf = arrow_scalar_udf(on_batch, struct_type, array_args=range(3, 3 + len(vectors)))
    return udf(F.col(ITEM_ID).cast("string"), bracket_key(seed), F.col(DUPLICATE), *vectors)


def transform_items(items: DataFrame, view_models: list[ViewModel], methods: tuple[str, ...], seed: int, candidates: int | str,
                    top_k: int = 3, backoff_at: float = 0.9) -> DataFrame:
    """The items, every column kept, plus answer_fields. Lazy: no Spark job runs here."""
    missing = [c for c in [ITEM_ID, *dict.fromkeys(v.column for v in view_models)] if c not in items.columns]
    if missing:
        raise UsageError(f"the items have no column(s) {', '.join(missing)}; they have {', '.join(items.columns)}")
    vectors = [vector_column(items, view.column, "items") for view in view_models]
    added = model_answer_names(view_models, methods)
    clash = [c for c in added if c in items.columns]
    if clash:
        raise UsageError(f"the items already have the output column(s) {', '.join(clash)}: rename or drop them first")
    marked = with_duplicate_flag(items)
    answered = marked.select(*[by_name(c) for c in items.columns], answers_column(view_models, methods, seed, candidates, top_k, vectors,
                                                                                             items.sparkSession, backoff_at).alias(_ANSWERS))
    return answered.select(*[by_name(c) for c in items.columns], *[F.col(_ANSWERS)[name].alias(name) for name in added])
