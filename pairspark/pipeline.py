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
from pairspark.config import Settings, View, parse_binary
from pairspark.core.model import primary_method
from pairspark.errors import UsageError
from pairspark.ml import PairwiseTournamentClassifier, PairwiseTournamentModel, stop_on_bad_rows
from pairspark.spark.classify import ORIGINAL, prediction_fields
from pairspark.report import SUSPECTS_SHOWN, render_report
from pairspark.spark.audit import audit_predictions, diff_predictions, with_item_columns
from pairspark.spark.evaluate import evaluate_predictions
from pairspark.spark.io import ITEM_ID, REASON, read_parquet, require_columns
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


def fit(spark: SparkSession, items_path: str, classes_path: str, views: list[View], out: str, settings: Settings) -> dict:
    """MODEL_DIR from the items and classes tables, through PairwiseTournamentClassifier."""
    with _stage("fit") as facts:
        items = read_parquet(spark, items_path, "items")
        estimator = PairwiseTournamentClassifier.from_settings(settings, classes_path, views, source=items_path)
        model = estimator.fit(items)
        fs = FileSystem(spark)
        model.meta = {
            "created_at": _now(),
            **model.meta,
            "inputs": {"items": fs.qualify(items_path), "classes": fs.qualify(classes_path)},
            "versions": _versions(),
        }
        with atomic_output(spark, out, {"counts": model.meta["counts"]}) as staging:
            model.write().save(staging)
        confident = {v["name"]: v["confident_items"] for v in model.meta["views"]}
        facts.update(valid_items=model.meta["counts"]["valid_items"], confident=confident, out=out)
    return model.meta


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
    with _stage("classify") as facts:
        model = PairwiseTournamentModel.from_dir(spark, model_dir)
        # this run's settings win over the model's, except what only fit decides
        model.apply_settings(settings)
        items = read_parquet(spark, items_path, "items")
        if label_col:
            require_columns(items, [label_col], "items table")
        methods = model.run_methods
        # one pass: predictions for valid rows, reason and original columns for the rest
        result = model.classified(items, label_col).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            info = _publish_classified(spark, result, model.view_models, methods, settings, label_col, items_path,
                                       model_dir, out, quarantine_out)
        finally:
            result.unpersist()
        facts.update(**{k: v for k, v in info["counts"].items() if k != "quarantined_by_reason"}, out=out)
    return info


def _publish_classified(spark, result, views, methods, settings, label_col, items_path, model_dir, out, quarantine_out) -> dict:
    """Quarantine first, then predictions (whose counts refer to it), each published atomically."""
    if settings.on_invalid == "error":
        stop_on_bad_rows(result, items_path)
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


def evaluate(spark: SparkSession, predictions_dir: str, out: str, label_col: str | None = None,
             changes_dir: str | None = None, show_cols: list[str] | None = None, binary: str | None = None) -> dict:
    """REPORT_DIR/metrics.json and REPORT_DIR/report.html (with the top suspected annotation errors
    and, from `changes_dir` (a diff's output), what changed since the previous run)."""
    with _stage("evaluate") as facts:
        fs = FileSystem(spark)
        info = _predictions_info(fs, predictions_dir)
        predictions = read_parquet(spark, predictions_dir, "predictions")
        label_col = label_col or info.get("label_column")
        report = evaluate_predictions(predictions, info["views"], info["methods"], info["class_ids"], label_col,
                                      parse_binary(binary))
        report["counts"].update(info["counts"])
        report["primary_method"] = info["primary_method"]
        report["predictions"] = fs.qualify(predictions_dir)
        report["created_at"] = _now()
        suspects = _suspects(spark, predictions, info, label_col, show_cols or [])
        changes = fs.read_json(f"{changes_dir}/summary.json") if changes_dir and fs.exists(f"{changes_dir}/summary.json") else None
        if changes:
            report["changes"] = {k: v for k, v in changes.items() if k != "by_pair"}
        page = render_report(report, suspects, report["class_counts"], changes)
        with atomic_output(spark, out, {"counts": report["counts"]}) as staging:
            fs.mkdirs(staging)
            fs.write_json(f"{staging}/metrics.json", report)
            fs.write_text(f"{staging}/report.html", page)
        facts.update(items=report["counts"]["items"], out=out)
    return report


def _predictions_info(fs: FileSystem, predictions_dir: str) -> dict:
    info_path = f"{predictions_dir}/{PREDICTIONS_INFO}"
    if not fs.exists(info_path):
        raise UsageError(f"{predictions_dir} holds no pairspark predictions ({PREDICTIONS_INFO} missing)")
    return fs.read_json(info_path)


def _suspects(spark, predictions: DataFrame, info: dict, label_col: str | None, show_cols: list[str]) -> list[dict]:
    if len(info["views"]) < 2 and not label_col:
        return []
    audit = audit_predictions(predictions, info["views"], label_col).limit(SUSPECTS_SHOWN)
    if show_cols:
        audit = with_item_columns(audit, read_parquet(spark, info["items"], "items"), show_cols)
    return [row.asDict() for row in audit.collect()]


def audit(spark: SparkSession, predictions_dir: str, out: str, label_col: str | None = None, items_path: str | None = None,
          show_cols: list[str] | None = None, csv_rows: int = 10_000) -> dict:
    """OUT/suspects (Parquet, every flagged item, best first), OUT/suspects.csv (the first
    `csv_rows`, for spreadsheets) and OUT/summary.json (counts per kind)."""
    with _stage("audit") as facts:
        fs = FileSystem(spark)
        info = _predictions_info(fs, predictions_dir)
        label_col = label_col or info.get("label_column")
        if len(info["views"]) < 2 and not label_col:
            raise UsageError("an audit needs predictions with two views or a label column (--label-col)")
        predictions = read_parquet(spark, predictions_dir, "predictions")
        if label_col:
            require_columns(predictions, [label_col], "predictions")
        flagged = audit_predictions(predictions, info["views"], label_col)
        if show_cols:
            items = read_parquet(spark, items_path or info["items"], "items")
            require_columns(items, show_cols, "items table")
            flagged = with_item_columns(flagged, items, show_cols)
        flagged = flagged.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            by_kind = {r["kind"]: int(r["count"]) for r in flagged.groupBy("kind").count().collect()}
            summary = {"predictions": fs.qualify(predictions_dir), "label_column": label_col, "flagged": sum(by_kind.values()),
                       "by_kind": by_kind, "created_at": _now()}
            with atomic_output(spark, out, {"counts": {"flagged": summary["flagged"]}}) as staging:
                flagged.coalesce(1).write.parquet(f"{staging}/suspects")
                top = flagged.limit(csv_rows).toPandas()
                fs.write_text(f"{staging}/suspects.csv", top.to_csv(index=False))
                fs.write_json(f"{staging}/summary.json", summary)
        finally:
            flagged.unpersist()
        facts.update(flagged=summary["flagged"], out=out)
    return summary


def diff(spark: SparkSession, old_dir: str, new_dir: str, out: str) -> dict:
    """OUT/changes (Parquet: item_id, view, old_class, new_class) and OUT/summary.json."""
    with _stage("diff") as facts:
        fs = FileSystem(spark)
        old_info, new_info = _predictions_info(fs, old_dir), _predictions_info(fs, new_dir)
        views = [v for v in new_info["views"] if v in old_info["views"]]
        if not views:
            raise UsageError(f"{old_dir} and {new_dir} share no view")
        changes, summary = diff_predictions(read_parquet(spark, old_dir, "old predictions"),
                                            read_parquet(spark, new_dir, "new predictions"), views)
        summary.update(old=fs.qualify(old_dir), new=fs.qualify(new_dir), created_at=_now())
        with atomic_output(spark, out, {"counts": {"changed": summary["changed"]}}) as staging:
            changes.coalesce(max(1, min(8, summary["compared"] // 1_000_000))).write.parquet(f"{staging}/changes")
            fs.write_json(f"{staging}/summary.json", summary)
        facts.update(compared=summary["compared"], changed=summary["changed"], out=out)
    return summary


def run(
    spark: SparkSession,
    items_path: str,
    classes_path: str,
    views: list[View],
    out: str,
    settings: Settings,
    label_col: str | None = None,
    previous: str | None = None,
    show_cols: list[str] | None = None,
) -> dict:
    """fit, classify, (diff against `previous` predictions,) evaluate into OUT/model, OUT/predictions,
    OUT/quarantine, (OUT/changes,) OUT/report."""
    out = out.rstrip("/")
    fit(spark, items_path, classes_path, views, f"{out}/model", settings)
    classify(spark, items_path, f"{out}/model", f"{out}/predictions", settings, label_col, f"{out}/quarantine")
    changes = None
    if previous:
        fs = FileSystem(spark)
        if fs.qualify(previous.rstrip("/")) == fs.qualify(f"{out}/predictions"):
            raise UsageError("--previous must be another run's predictions (this run replaces OUT/predictions)")
        changes = f"{out}/changes"
        diff(spark, previous, f"{out}/predictions", changes)
    return evaluate(spark, f"{out}/predictions", f"{out}/report", label_col, changes, show_cols, settings.binary)


def embed(spark: SparkSession, items_path: str, text_cols: list[str], out: str, model: str = "minilm",
          batch_size: int = 64, partitions: int | None = None) -> dict:
    """The items with one array<float> column `<col>_embedding` per text column (embed.py),
    written to `out` atomically; null/empty text gets a null vector (quarantined downstream)."""
    from pairspark.embed import ENCODERS, embed_series_udf

    if model not in ENCODERS:
        raise UsageError(f"unknown model {model!r}; available: {', '.join(ENCODERS)}")
    with _stage("embed") as facts:
        items = read_parquet(spark, items_path, "items")
        require_columns(items, text_cols, "items table")
        clash = [f"{c}_embedding" for c in text_cols if f"{c}_embedding" in items.columns]
        if clash:
            raise UsageError(f"the items already have {', '.join(clash)}; drop them or embed another column")
        if partitions:
            items = items.repartition(partitions)
        udf = embed_series_udf(model, batch_size)
        embedded = items.select("*", *[udf(F.col(c).cast("string")).alias(f"{c}_embedding") for c in text_cols])
        start = time.perf_counter()
        marker: dict = {}
        with atomic_output(spark, out, marker) as staging:
            embedded.write.parquet(staging)
            written = spark.read.parquet(staging)
            counts = written.select(F.count(F.lit(1)).alias("items"),
                                    *[F.sum(F.col(f"{c}_embedding").isNull().cast("int")).alias(c) for c in text_cols]).first()
            marker["counts"] = {"items": int(counts["items"]), "null_vectors": {c: int(counts[c] or 0) for c in text_cols}}
        seconds = time.perf_counter() - start
        info = {**marker["counts"], "model": model, "columns": [f"{c}_embedding" for c in text_cols],
                "seconds": round(seconds, 2), "texts_per_s": round(marker["counts"]["items"] * len(text_cols) / seconds, 1)}
        facts.update(items=info["items"], null_vectors=info["null_vectors"], texts_per_s=info["texts_per_s"], out=out)
    return info


def embed_classes(spark: SparkSession, names: list[str], views: list[str], out: str, prompt: str = "{}",
                  model: str = "minilm", batch_size: int = 64) -> dict:
    """A classes table (class_id, one prompt-vector column per view) from class names: every view
    gets the same text embedding of prompt.format(name) (a text encoder has one space)."""
    from pairspark.embed import encoder

    if "{}" not in prompt:
        raise UsageError(f"--prompt needs a {{}} where the class name goes, got {prompt!r}")
    if len(set(names)) != len(names) or not all(n.strip() for n in names):
        raise UsageError("class names must be distinct and non-empty")
    if len(names) < 2:
        raise UsageError("at least 2 class names are needed")
    with _stage("embed-classes") as facts:
        vectors = encoder(model).encode([prompt.format(n) for n in names], batch_size)
        columns = {"class_id": pa.array(names, pa.string())}
        for view in views:
            columns[view] = pa.array(list(vectors), pa.list_(pa.float32()))
        table = pa.table(columns)
        with atomic_output(spark, out, {"counts": {"classes": len(names)}}) as staging:
            spark.createDataFrame(table.to_pandas()).coalesce(1).write.parquet(staging)
        facts.update(classes=len(names), out=out)
    return {"classes": len(names), "views": views, "prompt": prompt, "model": model, "dim": int(vectors.shape[1])}
