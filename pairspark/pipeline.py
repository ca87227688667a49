"""The three stages as functions of (SparkSession, paths, settings): fit, classify, evaluate, run.

The CLI and the spark-submit jobs call these; each stage publishes its output atomically.
"""

from __future__ import annotations

import logging
import platform
import time
from contextlib import contextmanager
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyspark
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pairspark import __version__
from pairspark.config import Settings, View, format_views
from pairspark.errors import InvalidRowsError, UsageError
from pairspark.core.model import ITERATIVE_METHODS, default_methods, primary_method
from pairspark.spark.classify import ORIGINAL, classify_items, prediction_fields
from pairspark.spark.evaluate import evaluate_predictions
from pairspark.spark.fit import fit_views
from pairspark.spark.io import (
    DUPLICATE,
    ITEM_ID,
    REASON,
    check_item_dims,
    first_invalid,
    load_classes,
    mark_duplicates,
    read_parquet,
    require_columns,
    require_rows,
)
from pairspark.spark.model_io import load_model, model_view_meta, save_model
from pairspark.spark.storage import FileSystem, atomic_output

log = logging.getLogger("pairspark")

PREDICTIONS_INFO = "_pairspark.json"  # '_' prefix: ignored by Spark, pandas and pyarrow readers


@contextmanager
def _stage(name: str):
    start = time.perf_counter()
    facts: dict = {}
    yield facts
    details = " ".join(f"{k}={v}" for k, v in facts.items())
    log.info("%s done in %.1fs %s", name, time.perf_counter() - start, details)


def _versions() -> dict[str, str]:
    return {
        "pairspark": __version__,
        "python": platform.python_version(),
        "pyspark": pyspark.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "pyarrow": pa.__version__,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _configure(spark: SparkSession, settings: Settings) -> None:
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(settings.arrow_batch_size))


def _maybe_repartition(df: DataFrame, settings: Settings) -> DataFrame:
    return df.repartition(settings.partitions) if settings.partitions else df


def _read_items(spark: SparkSession, items_path: str, views: list[View], dims: dict[str, int], settings: Settings,
                check_now: bool) -> DataFrame:
    """The items with a DUPLICATE column. With --on-invalid error and `check_now`, a bad row
    stops the run here (an extra pass; classify finds them in its own pass instead)."""
    items = read_parquet(spark, items_path, "items")
    require_rows(items, f"items table {items_path}")
    marked = mark_duplicates(items, views)
    check_item_dims(marked, views, dims)
    if check_now and settings.on_invalid == "error":
        _stop_on_bad_rows(first_invalid(marked, views, dims), items_path)
    return marked


def _stop_on_bad_rows(bad: list[tuple[str, str]], items_path: str) -> None:
    if bad:
        shown = ", ".join(f"item_id={item!r} ({reason})" for item, reason in bad)
        raise InvalidRowsError(f"invalid item rows in {items_path}, first: {shown}; "
                               "use --on-invalid quarantine to set them aside")


def fit(spark: SparkSession, items_path: str, classes_path: str, views: list[View], out: str, settings: Settings) -> dict:
    _configure(spark, settings)
    with _stage("fit") as facts:
        tables = load_classes(spark, classes_path, views)
        dims = {name: t.dim for name, t in tables.items()}
        marked = _read_items(spark, items_path, views, dims, settings, check_now=True)
        columns = [ITEM_ID, *dict.fromkeys(v.column for v in views), DUPLICATE]
        methods = settings.methods or default_methods(len(views))
        result = fit_views(_maybe_repartition(marked.select(*columns), settings), views, tables, settings, methods)
        if result.valid_items == 0:
            raise UsageError(f"items table {items_path} has no valid rows to fit on (see the quarantine reasons)")
        fs = FileSystem(spark)
        meta = {
            "created_at": _now(),
            "settings": settings.to_json(),
            "views": [model_view_meta(v, result.confident_items[v.name]) for v in result.views],
            "views_spec": format_views(views),
            "methods": list(methods),
            "method_fits": result.method_fits,
            "inputs": {"items": fs.qualify(items_path), "classes": fs.qualify(classes_path)},
            "counts": {"valid_items": result.valid_items},
            "versions": _versions(),
        }
        with atomic_output(spark, out, {"counts": meta["counts"]}) as staging:
            save_model(spark, result.views, meta, staging)
        facts.update(valid_items=result.valid_items, confident=result.confident_items, out=out)
    return meta


def classify(
    spark: SparkSession,
    items_path: str,
    model_dir: str,
    out: str,
    settings: Settings,
    label_col: str | None = None,
    quarantine_out: str | None = None,
) -> dict:
    """Predictions for every valid item into `out`; invalid rows, with a reason, into
    `quarantine_out` (default OUT.quarantine), published first so the predictions' counts refer to it."""
    quarantine_out = quarantine_out or f"{out.rstrip('/')}.quarantine"
    _configure(spark, settings)
    with _stage("classify") as facts:
        views, meta = load_model(spark, model_dir)
        view_specs = [View(v.name, v.column) for v in views]
        dims = {v.name: v.dim for v in views}
        marked = _read_items(spark, items_path, view_specs, dims, settings, check_now=False)
        if label_col:
            require_columns(marked, [label_col], "items table")
        methods = settings.methods or tuple(meta.get("methods") or default_methods(len(views)))
        unfitted = [m for m in methods if m in ITERATIVE_METHODS and m not in views[0].scorers]
        if unfitted:
            raise UsageError(f"model {model_dir} was not fitted for {', '.join(unfitted)}: "
                             f"refit with --methods {','.join(methods)}")
        # one pass: predictions for valid rows, reason and original columns for the rest
        result = classify_items(spark, _maybe_repartition(marked, settings), views, methods, settings.seed,
                                label_col, settings.candidates).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            info = _publish_classified(spark, result, views, methods, settings, label_col, items_path, model_dir,
                                       out, quarantine_out)
        finally:
            result.unpersist()
        facts.update(**{k: v for k, v in info["counts"].items() if k != "quarantined_by_reason"}, out=out)
    return info


def _publish_classified(spark, result, views, methods, settings, label_col, items_path, model_dir, out, quarantine_out) -> dict:
    """Quarantine first, then predictions (whose counts refer to it), each published atomically."""
    if settings.on_invalid == "error":
        bad = result.where(F.col(REASON).isNotNull()).select(ITEM_ID, REASON)
        _stop_on_bad_rows([(r[ITEM_ID], r[REASON]) for r in bad.orderBy(F.col(ITEM_ID).asc_nulls_first()).limit(3).collect()],
                          items_path)
    quarantine = result.where(F.col(REASON).isNotNull()).select(f"{ORIGINAL}.*", REASON)
    marker: dict = {}
    with atomic_output(spark, quarantine_out, marker) as staging:
        quarantine.write.parquet(staging)
        reasons = {r[REASON]: r["count"] for r in spark.read.parquet(staging).groupBy(REASON).count().collect()}
        marker["counts"] = {"quarantined": sum(reasons.values()), "quarantined_by_reason": reasons}
    # Hash by item_id into a fixed number of files, sorted: the same bytes whatever the input
    # partitioning or row order (the tournament itself never depends on them).
    columns = [f.name for f in prediction_fields(views, methods, label_col)]
    predictions = (
        result.where(F.col(REASON).isNull()).select(*columns)
        .repartition(settings.output_files, ITEM_ID).sortWithinPartitions(ITEM_ID)
    )
    marker = {}
    with atomic_output(spark, out, marker) as staging:
        predictions.write.parquet(staging)
        classified = spark.read.parquet(staging).count()
        info = {
            "created_at": _now(),
            "views": [v.name for v in views],
            "methods": list(methods),
            "primary_method": primary_method(methods),
            "label_column": label_col,
            "class_ids": views[0].class_ids,
            "seed": settings.seed,
            "candidates": settings.candidates,
            "model": FileSystem(spark).qualify(model_dir),
            "items": FileSystem(spark).qualify(items_path),
            "quarantine": FileSystem(spark).qualify(quarantine_out),
            "counts": {
                "items_in": classified + sum(reasons.values()),
                "classified": classified,
                "quarantined": sum(reasons.values()),
                "quarantined_by_reason": dict(sorted(reasons.items())),
            },
            "versions": _versions(),
        }
        FileSystem(spark).write_json(f"{staging}/{PREDICTIONS_INFO}", info)
        marker["counts"] = info["counts"]
    return info


def evaluate(spark: SparkSession, predictions_dir: str, out: str, label_col: str | None = None) -> dict:
    with _stage("evaluate") as facts:
        fs = FileSystem(spark)
        info_path = f"{predictions_dir}/{PREDICTIONS_INFO}"
        if not fs.exists(info_path):
            raise UsageError(f"{predictions_dir} holds no pairspark predictions ({PREDICTIONS_INFO} missing)")
        info = fs.read_json(info_path)
        predictions = read_parquet(spark, predictions_dir, "predictions")
        label_col = label_col or info.get("label_column")
        report = evaluate_predictions(predictions, info["views"], info["methods"], info["class_ids"], label_col)
        report["counts"].update(info["counts"])
        report["primary_method"] = info["primary_method"]
        report["predictions"] = fs.qualify(predictions_dir)
        report["created_at"] = _now()
        with atomic_output(spark, out, {"counts": report["counts"]}) as staging:
            fs.mkdirs(staging)
            fs.write_json(f"{staging}/metrics.json", report)
        facts.update(items=report["counts"]["items"], out=out)
    return report


def run(
    spark: SparkSession,
    items_path: str,
    classes_path: str,
    views: list[View],
    out: str,
    settings: Settings,
    label_col: str | None = None,
) -> dict:
    out = out.rstrip("/")
    fit(spark, items_path, classes_path, views, f"{out}/model", settings)
    classify(spark, items_path, f"{out}/model", f"{out}/predictions", settings, label_col, f"{out}/quarantine")
    return evaluate(spark, f"{out}/predictions", f"{out}/report", label_col)
