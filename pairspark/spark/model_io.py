"""The model directory: plain Parquet and JSON a user can open with Spark or pandas.

MODEL_DIR/stats.parquet    view, class_id, count, sum, sumsq, m2   (confident subset, float64)
MODEL_DIR/masks.parquet    view, class_a, class_b, dims           (class_a < class_b, dims sorted)
MODEL_DIR/classes.parquet  view, class_index, class_id, vector    (unit prompt vectors used)
MODEL_DIR/meta.json        settings, views, class order, inputs, counts, versions
"""

from __future__ import annotations

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from pairspark.core.masks import class_pairs
from pairspark.core.model import ViewModel
from pairspark.core.stats import ClassMoments
from pairspark.errors import UsageError
from pairspark.spark.io import read_parquet
from pairspark.spark.storage import FileSystem

_STATS = T.StructType(
    [
        T.StructField("view", T.StringType(), False),
        T.StructField("class_id", T.StringType(), False),
        T.StructField("count", T.LongType(), False),
        T.StructField("sum", T.ArrayType(T.DoubleType(), False), False),
        T.StructField("sumsq", T.ArrayType(T.DoubleType(), False), False),
        T.StructField("m2", T.ArrayType(T.DoubleType(), False), False),
    ]
)
_MASKS = T.StructType(
    [
        T.StructField("view", T.StringType(), False),
        T.StructField("class_a", T.StringType(), False),
        T.StructField("class_b", T.StringType(), False),
        T.StructField("dims", T.ArrayType(T.IntegerType(), False), False),
    ]
)
_CLASSES = T.StructType(
    [
        T.StructField("view", T.StringType(), False),
        T.StructField("class_index", T.IntegerType(), False),
        T.StructField("class_id", T.StringType(), False),
        T.StructField("vector", T.ArrayType(T.FloatType(), False), False),
    ]
)


def _write_small(spark: SparkSession, rows: list[tuple], schema: T.StructType, path: str) -> None:
    spark.createDataFrame(rows, schema).coalesce(1).write.mode("errorifexists").parquet(path)


def save_model(spark: SparkSession, views: list[ViewModel], meta: dict, path: str) -> None:
    """Write into `path` (a fresh staging directory, see storage.atomic_output)."""
    stats, masks, classes = [], [], []
    for v in views:
        m = v.moments
        sums, sumsq = m.sums, m.sumsq
        for c, cid in enumerate(v.class_ids):
            stats.append((v.name, cid, int(m.count[c]), sums[c].tolist(), sumsq[c].tolist(), m.m2[c].tolist()))
            classes.append((v.name, c, cid, v.class_vectors[c].astype(float).tolist()))
        for (a, b), dims in zip(class_pairs(v.n_classes), v.masks):
            masks.append((v.name, v.class_ids[a], v.class_ids[b], [int(d) for d in dims]))
    _write_small(spark, stats, _STATS, f"{path}/stats.parquet")
    _write_small(spark, masks, _MASKS, f"{path}/masks.parquet")
    _write_small(spark, classes, _CLASSES, f"{path}/classes.parquet")
    FileSystem(spark).write_json(f"{path}/meta.json", meta)


def load_model(spark: SparkSession, path: str) -> tuple[list[ViewModel], dict]:
    fs = FileSystem(spark)
    if not fs.exists(f"{path}/meta.json"):
        raise UsageError(f"{path} is not a pairspark model directory (no meta.json); run `pairspark fit` first")
    meta = fs.read_json(f"{path}/meta.json")
    stats = read_parquet(spark, f"{path}/stats.parquet", "model statistics").toPandas()
    masks = read_parquet(spark, f"{path}/masks.parquet", "model masks").toPandas()
    classes = read_parquet(spark, f"{path}/classes.parquet", "model classes").toPandas()
    views = []
    for view in meta["views"]:
        name = view["name"]
        vc = classes[classes["view"] == name].sort_values("class_index")
        class_ids = list(vc["class_id"])
        if class_ids != view["class_ids"]:
            raise UsageError(f"model {path} is inconsistent: classes.parquet and meta.json disagree for view {name}")
        index = {c: i for i, c in enumerate(class_ids)}
        vs = stats[stats["view"] == name].assign(i=lambda d: d["class_id"].map(index)).sort_values("i")
        count = vs["count"].to_numpy(np.int64)
        sums = np.stack(vs["sum"].to_numpy()).astype(np.float64)
        mean = np.where(count[:, None] > 0, sums / np.maximum(count, 1)[:, None], 0.0)
        moments = ClassMoments(count, mean, np.stack(vs["m2"].to_numpy()).astype(np.float64))
        vm = masks[masks["view"] == name]
        dims_by_pair = {(index[a], index[b]): np.asarray(d, np.int32) for a, b, d in zip(vm["class_a"], vm["class_b"], vm["dims"])}
        pair_list = [tuple(p) for p in class_pairs(len(class_ids)).tolist()]
        if set(dims_by_pair) != set(pair_list):
            raise UsageError(f"model {path} is inconsistent: masks.parquet does not cover every pair of view {name}")
        views.append(
            ViewModel(
                name=name,
                column=view["column"],
                class_ids=class_ids,
                class_vectors=np.stack(vc["vector"].to_numpy()).astype(np.float32),
                moments=moments,
                masks=[dims_by_pair[p] for p in pair_list],
                min_margin_used=float(view["min_margin_used"]),
            )
        )
    return views, meta


def model_view_meta(v: ViewModel, confident_items: int) -> dict:
    dims_kept = np.array([len(d) for d in v.masks])
    return {
        "name": v.name,
        "column": v.column,
        "dim": v.dim,
        "class_ids": v.class_ids,
        "min_margin_used": v.min_margin_used,
        "confident_items": confident_items,
        "class_counts": {cid: int(n) for cid, n in zip(v.class_ids, v.moments.count)},
        "mask_dims": {
            "min": int(dims_kept.min()),
            "median": float(np.median(dims_kept)),
            "max": int(dims_kept.max()),
        },
    }

