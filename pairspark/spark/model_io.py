"""The model directory: plain Parquet and JSON a user can open with Spark or pandas.

MODEL_DIR/metadata/        one JSON line: pyspark.ml's metadata (class, uid, Params) plus
                           "pairspark": views, class order, fits, counts, versions
MODEL_DIR/stats.parquet    view, class_id, count, sum, sumsq, m2   (confident subset, float64;
                           compact: view, class_id, count, sum, m2 in float32, see below)
MODEL_DIR/masks.parquet    view, class_a, class_b, dims           (class_a < class_b, dims sorted;
                           no rows for a view above 256 classes, whose masks are made on demand
                           from stats.parquet: its metadata says "pair_masks": "on_demand")
MODEL_DIR/classes.parquet  view, class_index, class_id, vector    (unit prompt vectors used)
MODEL_DIR/scorers.parquet  view, method, class_id, weights, quad, bias (fitted iterative methods,
                           core/scorers.Scorer; prompt_weight and temperature in the metadata)

A model above 256 classes (whose views make their masks on demand) is written compact:
its bulk is C x D per view, so stats.parquet keeps sum and m2 in float32 and drops sumsq (derived
from them), and scorers.parquet keeps weights and quad in float32: 4 x C x D float32 per view with
the prompt vectors and one scorer, half of the float64 tables. The fitted view already holds those
rounded values (core/model.fit_view), so a reloaded model answers with the bits of the fitted one.
The reader takes either form.

Everything is written and read through DataFrames only (no SparkContext, JVM gateway or Hadoop
FileSystem call), so a model saves and loads the same way on a classic and a Spark Connect
session. The metadata has the layout of pyspark.ml's DefaultParamsWriter, so a Pipeline holding
the model saves and loads it like any stage. The CLI also writes MODEL_DIR/meta.json, a readable
copy of the "pairspark" part.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from pairspark.core.masks import MaskSettings, PairMasks, class_pairs
from pairspark.core.pair_cache import sample_lengths
from pairspark.core.scorers import Scorer
from pairspark.core.tournament import pair_index
from pairspark.core.model import ViewModel, stores_pairs
from pairspark.core.stats import ClassMoments
from pairspark.core.tree import Tree
from pairspark.errors import UsageError
from pairspark.spark.io import read_parquet
from pairspark.spark.compat import create_frame, to_arrow
from pairspark.version import __version__

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
_STATS_COMPACT = T.StructType([
    T.StructField(f.name, T.ArrayType(T.FloatType(), False), False) if f.name in ("sum", "m2") else f
    for f in _STATS.fields if f.name != "sumsq"])
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


def _write_table(spark: SparkSession, table: pa.Table, schema: T.StructType, path: str, mode: str) -> None:
    create_frame(spark, table, schema).coalesce(1).write.mode(mode).parquet(path)


def _read_table(spark: SparkSession, path: str, what: str) -> pa.Table:
    return to_arrow(read_parquet(spark, path, what))


def write_metadata(spark: SparkSession, metadata: dict, path: str, mode: str) -> None:
    text = json.dumps(metadata, separators=(",", ":"), sort_keys=True)
    spark.createDataFrame([(text,)], "value string").coalesce(1).write.mode(mode).text(f"{path}/metadata")


def read_metadata(spark: SparkSession, path: str) -> dict:
    try:
        first = spark.read.text(f"{path}/metadata").first()
    except AnalysisException:
        first = None
    if first is None:
        raise UsageError(f"{path} is not a pairspark model directory (no metadata); fit one first")
    return json.loads(first[0])


_MASKS_ARROW = pa.schema([(f.name, pa.string() if f.name != "dims" else pa.list_(pa.int32()), False) for f in _MASKS])


def _masks_table(v: ViewModel) -> pa.Table:
    """One row per pair, built column-wise from the packed masks (no Python loop per pair); no
    rows for a view that makes its masks on demand."""
    if v.on_demand:
        return _MASKS_ARROW.empty_table()
    pairs = class_pairs(v.n_classes)
    ids = pa.array(v.class_ids, pa.string())
    indptr, flat = v.masks.csr()
    if len(flat) >= 2**31:
        raise ValueError(f"view {v.name}: {len(flat)} mask entries exceed one Parquet list column; use --max-dims")
    dims = pa.ListArray.from_arrays(pa.array(indptr.astype(np.int32)), pa.array(flat.astype(np.int32)))
    return pa.Table.from_arrays(
        [pa.array([v.name] * len(pairs), pa.string()), ids.take(pairs[:, 0]), ids.take(pairs[:, 1]), dims],
        schema=_MASKS_ARROW,
    )


def _read_masks(masks: pa.Table, view: str, index: dict[str, int], dim: int, path: str) -> PairMasks:
    rows = masks.filter(pc.equal(masks["view"], view))
    n_classes = len(index)
    a = np.array([index.get(c, -1) for c in rows["class_a"].to_pylist()], dtype=np.int64)
    b = np.array([index.get(c, -1) for c in rows["class_b"].to_pylist()], dtype=np.int64)
    expected = n_classes * (n_classes - 1) // 2
    if len(a) != expected or (a < 0).any() or (b <= a).any():
        raise UsageError(f"model {path} is inconsistent: masks.parquet does not cover every pair of view {view}")
    order = np.argsort(pair_index(a, b, n_classes))
    if not np.array_equal(pair_index(a, b, n_classes)[order], np.arange(expected)):
        raise UsageError(f"model {path} is inconsistent: masks.parquet does not cover every pair of view {view}")
    dims = rows["dims"].combine_chunks().take(pa.array(order))
    offsets = dims.offsets.to_numpy().astype(np.int64)
    flat = dims.values.to_numpy(zero_copy_only=False)
    return PairMasks(offsets - offsets[0], flat[offsets[0] : offsets[-1]].astype(np.uint16)).compact(dim)


_SCORERS_SPARK = T.StructType([
    T.StructField("view", T.StringType()), T.StructField("method", T.StringType()), T.StructField("class_id", T.StringType()),
    T.StructField("weights", T.ArrayType(T.DoubleType())), T.StructField("quad", T.ArrayType(T.DoubleType())),
    T.StructField("bias", T.DoubleType()),
])
_SCORERS_SPARK_COMPACT = T.StructType([
    T.StructField(f.name, T.ArrayType(T.FloatType()) if f.name in ("weights", "quad") else f.dataType)
    for f in _SCORERS_SPARK.fields])


def compact(views: list[ViewModel]) -> bool:
    """Whether the model is written compact (float32 statistics and scorers): above 256 classes,
    where its views cannot store their pair masks (core/model.fit_view rounds them so at fit)."""
    return bool(views) and not stores_pairs(views[0].n_classes)


def _rows_array(matrix: np.ndarray | None, n: int, dtype) -> pa.Array:
    """A (n, D) matrix as a list column (one row each), or n nulls for None; no Python loop per row."""
    if matrix is None:
        return pa.nulls(n, pa.list_(pa.from_numpy_dtype(dtype)))
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * matrix.shape[1])
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(matrix, dtype=dtype).reshape(-1)))


def _scorers_table(views: list[ViewModel]) -> pa.Table:
    dtype = np.float32 if compact(views) else np.float64
    parts = []
    for v in views:
        for method, scorer in sorted(v.scorers.items()):
            n = v.n_classes
            parts.append(pa.table({
                "view": pa.array([v.name] * n, pa.string()), "method": pa.array([method] * n, pa.string()),
                "class_id": pa.array(v.class_ids, pa.string()), "weights": _rows_array(scorer.weights, n, dtype),
                "quad": _rows_array(scorer.quad, n, dtype), "bias": pa.array(np.asarray(scorer.bias, np.float64))}))
    schema = _arrow_schema(_SCORERS_SPARK_COMPACT if dtype == np.float32 else _SCORERS_SPARK)
    return pa.concat_tables([t.cast(schema) for t in parts]) if parts else schema.empty_table()


def _read_scorers(table: pa.Table, view: str, class_ids: list[str], settings: dict, path: str) -> dict[str, Scorer]:
    out = {}
    rows = table.filter(pc.equal(table["view"], view))
    for method in sorted(set(rows["method"].to_pylist())):
        mine = rows.filter(pc.equal(rows["method"], method)).to_pandas()
        if list(mine["class_id"]) != class_ids:
            raise UsageError(f"model {path} is inconsistent: scorers.parquet rows of {view}/{method} do not match the classes")
        quad = None if mine["quad"].isna().all() else np.stack(mine["quad"].to_numpy()).astype(np.float64)
        extra = settings.get(method, {})
        out[method] = Scorer(np.stack(mine["weights"].to_numpy()).astype(np.float64), mine["bias"].to_numpy(np.float64),
                             quad, float(extra.get("prompt_weight", 0.0)), float(extra.get("temperature", 0.0)))
    return out


def _stats_table(views: list[ViewModel]) -> pa.Table:
    is_compact = compact(views)
    dtype = np.float32 if is_compact else np.float64
    parts = []
    for v in views:
        m, n = v.moments, v.n_classes
        columns = {"view": pa.array([v.name] * n, pa.string()), "class_id": pa.array(v.class_ids, pa.string()),
                   "count": pa.array(np.asarray(m.count, np.int64)), "sum": _rows_array(m.sums, n, dtype)}
        if not is_compact:
            columns["sumsq"] = _rows_array(m.sumsq, n, dtype)
        columns["m2"] = _rows_array(m.m2, n, dtype)
        parts.append(pa.table(columns))
    schema = _arrow_schema(_STATS_COMPACT if is_compact else _STATS)
    return pa.concat_tables([t.cast(schema) for t in parts]) if parts else schema.empty_table()


def _classes_table(views: list[ViewModel]) -> pa.Table:
    columns: dict[str, list] = {f.name: [] for f in _CLASSES}
    for v in views:
        columns["view"] += [v.name] * v.n_classes
        columns["class_index"] += list(range(v.n_classes))
        columns["class_id"] += v.class_ids
        columns["vector"] += list(v.class_vectors.astype(np.float32))
    return pa.table(columns, schema=_arrow_schema(_CLASSES))


def _arrow_schema(schema: T.StructType) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema)


def save_model(spark: SparkSession, views: list[ViewModel], metadata: dict, path: str, overwrite: bool = False) -> None:
    """Write the model's tables and metadata under `path` (each part replaced with overwrite)."""
    mode = "overwrite" if overwrite else "error"
    _write_table(spark, _stats_table(views), _STATS_COMPACT if compact(views) else _STATS, f"{path}/stats.parquet", mode)
    _write_table(spark, pa.concat_tables([_masks_table(v) for v in views]), _MASKS, f"{path}/masks.parquet", mode)
    _write_table(spark, _classes_table(views), _CLASSES, f"{path}/classes.parquet", mode)
    _write_table(spark, _scorers_table(views), _SCORERS_SPARK_COMPACT if compact(views) else _SCORERS_SPARK,
                 f"{path}/scorers.parquet", mode)
    write_metadata(spark, metadata, path, mode)


def load_model(spark: SparkSession, path: str) -> tuple[list[ViewModel], dict]:
    """(view models, the whole metadata) of a model directory."""
    metadata = read_metadata(spark, path)
    meta = metadata.get("pairspark")
    if not meta:
        raise UsageError(f"{path} holds no pairspark model (its metadata has no 'pairspark' part)")
    stats = _read_table(spark, f"{path}/stats.parquet", "model statistics").to_pandas()
    masks = _read_table(spark, f"{path}/masks.parquet", "model masks")
    classes = _read_table(spark, f"{path}/classes.parquet", "model classes").to_pandas()
    scorers = _read_table(spark, f"{path}/scorers.parquet", "model scorers")
    mask_settings = MaskSettings(**meta["mask_settings"])
    tree = tree_of_meta(meta["tree"]) if meta.get("tree") else None
    views = []
    for view in meta["views"]:
        name = view["name"]
        vc = classes[classes["view"] == name].sort_values("class_index")
        class_ids = list(vc["class_id"])
        if class_ids != view["class_ids"]:
            raise UsageError(f"model {path} is inconsistent: classes.parquet and the metadata disagree for view {name}")
        index = {c: i for i, c in enumerate(class_ids)}
        vs = stats[stats["view"] == name].assign(i=lambda d: d["class_id"].map(index)).sort_values("i")
        moments = ClassMoments.from_sums(vs["count"].to_numpy(np.int64), np.stack(vs["sum"].to_numpy()),
                                         np.stack(vs["m2"].to_numpy()))
        views.append(
            ViewModel(
                name=name,
                column=view["column"],
                class_ids=class_ids,
                class_vectors=np.stack(vc["vector"].to_numpy()).astype(np.float32),
                moments=moments,
                masks=_view_masks(view, masks, index, path, f"version {meta.get('pairspark_version', 'unknown')}"),
                min_margin_used=float(view["min_margin_used"]),
                mask_settings=mask_settings,
                scorers=_read_scorers(scorers, name, class_ids, view.get("scorers", {}), path),
                calibration={m: float(t) for m, t in view.get("calibration", {}).items()},
                tree=tree,
            )
        )
    return views, metadata


# A view's "pair_masks" in the metadata: "stored" in masks.parquet, or made "on_demand" from the
# statistics (core/pair_cache.py). Models written before on-demand masks have no key: stored.
PAIR_MASKS = ("stored", "on_demand")


def _view_masks(view: dict, masks: pa.Table, index: dict[str, int], path: str, writer: str) -> PairMasks | None:
    kind = view.get("pair_masks", "stored")
    if kind not in PAIR_MASKS:
        raise UsageError(f"model {path}: view {view['name']} has pair_masks {kind!r}, which this pairspark "
                         f"{__version__} cannot read (it knows {', '.join(PAIR_MASKS)}); classify with the pairspark "
                         f"that wrote it ({writer}) or refit")
    if kind == "on_demand":
        return None
    return _read_masks(masks, view["name"], index, int(view["dim"]), path)


def tree_meta(tree: Tree) -> dict:
    """The class tree as the model's metadata keeps it: nodes (sorted) and each one's parent."""
    return {"nodes": list(tree.node_ids), "parents": [tree.node_ids[p] if p >= 0 else None for p in tree.parent],
            "levels": tree.max_depth, "leaves": len(tree.leaves)}


def tree_of_meta(meta: dict) -> Tree:
    return Tree.of(meta["nodes"], meta["parents"], "model metadata")


def model_view_meta(v: ViewModel, confident_items: int) -> dict:
    # mask sizes of every pair, or of a fixed sample of 2,000 pairs when they are made on demand
    dims_kept = sample_lengths(v.moments, v.mask_settings) if v.on_demand else v.masks.lengths
    if len(dims_kept) == 0:
        dims_kept = np.zeros(1, np.int64)
    return {
        "name": v.name,
        "column": v.column,
        "dim": v.dim,
        "class_ids": v.class_ids,
        "min_margin_used": v.min_margin_used,
        "confident_items": confident_items,
        "scorers": {m: {"prompt_weight": s.prompt_weight, "temperature": s.temperature} for m, s in v.scorers.items()},
        # the temperature of each method's probabilities (core/calibration.py)
        "calibration": dict(v.calibration),
        "class_counts": {cid: int(n) for cid, n in zip(v.class_ids, v.moments.count)},
        "pair_masks": "on_demand" if v.on_demand else "stored",
        "mask_dims": {
            "min": int(dims_kept.min()),
            "median": float(np.median(dims_kept)),
            "max": int(dims_kept.max()),
            "sampled_pairs": int(len(dims_kept)) if v.on_demand else None,
        },
    }



def read_class_vectors(spark: SparkSession, path: str) -> list[tuple[str, str, list[str], np.ndarray]]:
    """Per view of a model directory: (name, items' column, class_ids, unit prompt vectors float32),
    without the statistics, masks and scorers a full load_model reads (the evaluation's use)."""
    meta = read_metadata(spark, path).get("pairspark")
    if not meta:
        raise UsageError(f"{path} holds no pairspark model (its metadata has no 'pairspark' part)")
    classes = _read_table(spark, f"{path}/classes.parquet", "model classes").to_pandas()
    out = []
    for view in meta["views"]:
        vc = classes[classes["view"] == view["name"]].sort_values("class_index")
        out.append((view["name"], view["column"], list(vc["class_id"]), np.stack(vc["vector"].to_numpy()).astype(np.float32)))
    return out
