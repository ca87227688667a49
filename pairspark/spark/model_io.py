"""The model directory: plain Parquet and JSON a user can open with Spark or pandas.

MODEL_DIR/stats.parquet    view, class_id, count, sum, sumsq, m2   (confident subset, float64)
MODEL_DIR/masks.parquet    view, class_a, class_b, dims           (class_a < class_b, dims sorted)
MODEL_DIR/classes.parquet  view, class_index, class_id, vector    (unit prompt vectors used)
MODEL_DIR/scorers.parquet  view, method, class_id, weights, quad, bias (fitted iterative methods,
                           core/refine.Scorer; prompt_weight and temperature in meta.json)
MODEL_DIR/meta.json        settings, views, class order, inputs, counts, versions
"""

from __future__ import annotations

import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from pairspark.core.masks import MaskSettings, PairMasks, class_pairs
from pairspark.core.refine import Scorer
from pairspark.core.tournament import pair_index
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


def _write_arrow(spark: SparkSession, table: pa.Table, path: str) -> None:
    """One Parquet part written by pyarrow on the driver and uploaded: at 1,000 classes the masks
    are ~1 GB of Spark rows, too much to push through the driver JVM's heap."""
    with tempfile.TemporaryDirectory(prefix="pairspark-") as tmp:
        local = f"{tmp}/part-00000.parquet"
        pq.write_table(table, local)
        FileSystem(spark).copy_from_local(local, f"{path}/part-00000.parquet")


def _read_arrow(spark: SparkSession, path: str, what: str) -> pa.Table:
    fs = FileSystem(spark)
    parts = [n for n in fs.list_names(path) if n.endswith(".parquet")] if fs.exists(path) else []
    if not parts:
        raise UsageError(f"cannot read {what} from {path}: no Parquet files")
    with tempfile.TemporaryDirectory(prefix="pairspark-") as tmp:
        tables = []
        for name in parts:
            fs.copy_to_local(f"{path}/{name}", f"{tmp}/{name}")
            tables.append(pq.read_table(f"{tmp}/{name}"))
        return pa.concat_tables(tables)


def _masks_table(v: ViewModel) -> pa.Table:
    """One row per pair, built column-wise from the packed masks (no Python loop per pair)."""
    pairs = class_pairs(v.n_classes)
    ids = pa.array(v.class_ids, pa.string())
    indptr, flat = v.masks.csr()
    if len(flat) >= 2**31:
        raise ValueError(f"view {v.name}: {len(flat)} mask entries exceed one Parquet list column; use --max-dims")
    dims = pa.ListArray.from_arrays(pa.array(indptr.astype(np.int32)), pa.array(flat.astype(np.int32)))
    return pa.Table.from_arrays(
        [pa.array([v.name] * len(pairs), pa.string()), ids.take(pairs[:, 0]), ids.take(pairs[:, 1]), dims],
        schema=pa.schema([(f.name, pa.string() if f.name != "dims" else pa.list_(pa.int32()), False) for f in _MASKS]),
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


_SCORERS = pa.schema([("view", pa.string()), ("method", pa.string()), ("class_id", pa.string()),
                      ("weights", pa.list_(pa.float64())), ("quad", pa.list_(pa.float64())), ("bias", pa.float64())])


def _scorers_table(views: list[ViewModel]) -> pa.Table:
    columns: dict[str, list] = {name: [] for name in _SCORERS.names}
    for v in views:
        for method, scorer in sorted(v.scorers.items()):
            for c, cid in enumerate(v.class_ids):
                columns["view"].append(v.name)
                columns["method"].append(method)
                columns["class_id"].append(cid)
                columns["weights"].append(scorer.weights[c].tolist())
                columns["quad"].append(None if scorer.quad is None else scorer.quad[c].tolist())
                columns["bias"].append(float(scorer.bias[c]))
    return pa.Table.from_pydict(columns, schema=_SCORERS)


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


def save_model(spark: SparkSession, views: list[ViewModel], meta: dict, path: str) -> None:
    """Write into `path` (a fresh staging directory, see storage.atomic_output)."""
    stats, masks, classes = [], [], []
    for v in views:
        m = v.moments
        sums, sumsq = m.sums, m.sumsq
        for c, cid in enumerate(v.class_ids):
            stats.append((v.name, cid, int(m.count[c]), sums[c].tolist(), sumsq[c].tolist(), m.m2[c].tolist()))
            classes.append((v.name, c, cid, v.class_vectors[c].astype(float).tolist()))
        masks.append(_masks_table(v))
    _write_small(spark, stats, _STATS, f"{path}/stats.parquet")
    _write_arrow(spark, pa.concat_tables(masks), f"{path}/masks.parquet")
    _write_small(spark, classes, _CLASSES, f"{path}/classes.parquet")
    _write_arrow(spark, _scorers_table(views), f"{path}/scorers.parquet")
    FileSystem(spark).write_json(f"{path}/meta.json", meta)


def load_model(spark: SparkSession, path: str) -> tuple[list[ViewModel], dict]:
    fs = FileSystem(spark)
    if not fs.exists(f"{path}/meta.json"):
        raise UsageError(f"{path} is not a pairspark model directory (no meta.json); run `pairspark fit` first")
    meta = fs.read_json(f"{path}/meta.json")
    stats = read_parquet(spark, f"{path}/stats.parquet", "model statistics").toPandas()
    masks = _read_arrow(spark, f"{path}/masks.parquet", "model masks")
    classes = read_parquet(spark, f"{path}/classes.parquet", "model classes").toPandas()
    # models written before scorers.parquet existed hold no iterative method
    scorers = _read_arrow(spark, f"{path}/scorers.parquet", "model scorers") if fs.exists(f"{path}/scorers.parquet") else _SCORERS.empty_table()
    mask_settings = MaskSettings(**{k: meta["settings"][k] for k in ("ratio_threshold", "min_dims", "max_dims", "min_class_count")})
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
        view_masks = _read_masks(masks, name, index, int(view["dim"]), path)
        views.append(
            ViewModel(
                name=name,
                column=view["column"],
                class_ids=class_ids,
                class_vectors=np.stack(vc["vector"].to_numpy()).astype(np.float32),
                moments=moments,
                masks=view_masks,
                min_margin_used=float(view["min_margin_used"]),
                mask_settings=mask_settings,
                scorers=_read_scorers(scorers, name, class_ids, view.get("scorers", {}), path),
            )
        )
    return views, meta


def model_view_meta(v: ViewModel, confident_items: int) -> dict:
    dims_kept = v.masks.lengths
    return {
        "name": v.name,
        "column": v.column,
        "dim": v.dim,
        "class_ids": v.class_ids,
        "min_margin_used": v.min_margin_used,
        "confident_items": confident_items,
        "scorers": {m: {"prompt_weight": s.prompt_weight, "temperature": s.temperature} for m, s in v.scorers.items()},
        "class_counts": {cid: int(n) for cid, n in zip(v.class_ids, v.moments.count)},
        "mask_dims": {
            "min": int(dims_kept.min()),
            "median": float(np.median(dims_kept)),
            "max": int(dims_kept.max()),
        },
    }

