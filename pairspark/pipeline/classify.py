"""The classify stage: every item row through the model, by one road whichever reader reads
the items (pipeline/readers.py); the invalid rows, with a reason, to the quarantine, published
first, then the predictions and their PREDICTIONS_INFO, which the other stages read."""

from __future__ import annotations

import logging

import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pairspark.config import Settings
from pairspark.core.columns import ITEM_ID, VERIFIED_LABEL
from pairspark.core.methods import primary_method
from pairspark.errors import UsageError
from pairspark.ml import PairwiseTournamentModel
from pairspark.params import CLASSIFY_PARAMS
from pairspark.pipeline.readers import ID, LABEL, classify_reader, read_items
from pairspark.pipeline.stage import now, source_ref, stage, versions
from pairspark.spark.io import labels_frame, read_labels, read_parquet, require_columns
from pairspark.spark.fs import FileSystem
from pairspark.spark.model_io import tree_meta
from pairspark.spark.items import ERROR, check_item_dims, count_by_reason, require_item_columns, stop_on_set_aside, valid_rows
from pairspark.spark.publish import atomic_output
from pairspark.spark.tables import publish_table
from pairspark.spark.transform import answer_columns
from pairspark.views import View

log = logging.getLogger("pairspark")

PREDICTIONS_INFO = "_pairspark.json"


def classify(
    spark: SparkSession,
    items_path: str,
    model_dir: str,
    out: str,
    settings: Settings,
    label_col: str | None = None,
    quarantine_out: str | None = None,
    publish_table: bool = True,
) -> dict:
    """Predictions for every valid item into `out`; invalid rows, with a reason, into
    `quarantine_out` (default OUT.quarantine), published first so the predictions' counts refer to it;
    then, with settings.predictions_table (and publish_table), the predictions as that table."""
    quarantine_out = quarantine_out or f"{out.rstrip('/')}.quarantine"
    with stage("classify", spark) as facts:
        model = PairwiseTournamentModel.load(model_dir)
        # this run's classify-time settings win over the model's (what fit decided stays)
        model._set(**{p: v for p, v in settings.params.items() if p in CLASSIFY_PARAMS})
        methods = model.run_methods  # a method the model was not fitted for stops here, before any read
        items = read_items(spark, items_path, settings)
        if label_col:
            require_columns(items, [label_col], "items table")
        views = [View(v.name, v.column) for v in model.view_models]
        require_item_columns(items, views)
        check_item_dims(items, views, {v.name: v.dim for v in model.view_models})
        labels_path = settings.labels or model.labels_path()
        labels = (labels_path, read_labels(spark, labels_path, model.view_models[0].class_ids)) if labels_path else None
        reader = classify_reader(items, items_path, views, label_col, settings)
        facts.update(reader=reader.name)
        # one pass, persisted: the answers of every row (and what sets an invalid one aside)
        answered = reader.answered(model, label_col).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            info = _publish_classified(spark, answered, reader.set_aside(answered), model, methods, settings, label_col,
                                       items_path, model_dir, out, quarantine_out, labels)
        finally:
            answered.unpersist()
        if settings.predictions_table and publish_table:
            info["table"] = predictions_table(spark, out, settings.predictions_table)
        facts.update(**{k: v for k, v in info["counts"].items() if k != "quarantined_by_reason"}, out=out)
    return info


def predictions_table(spark: SparkSession, predictions_dir: str, name: str) -> dict:
    """Publish a predictions directory as the metastore table `name` (spark/tables.publish_table)."""
    published = publish_table(spark, read_parquet(spark, predictions_dir, "predictions"), name)
    log.info("predictions published as table %s (version %s)", name, published["version"])
    return published


def predictions_info(fs: FileSystem, predictions_dir: str) -> dict:
    """The PREDICTIONS_INFO a classify wrote beside its predictions."""
    info_path = f"{predictions_dir}/{PREDICTIONS_INFO}"
    if not fs.exists(info_path):
        raise UsageError(f"{predictions_dir} holds no pairspark predictions ({PREDICTIONS_INFO} missing)")
    return fs.read_json(info_path)


def _publish_classified(spark, answered: DataFrame, quarantine: DataFrame, model, methods: tuple[str, ...],
                        settings: Settings, label_col, items_path, model_dir, out, quarantine_out,
                        labels: tuple[str, pa.Table] | None) -> dict:
    """Quarantine first, then predictions (whose counts refer to it), each published atomically.
    `answered`: a ClassifyReader's rows; `quarantine`: its set_aside of them."""
    view_models = model.view_models
    if settings.on_invalid == ERROR:
        stop_on_set_aside(quarantine, items_path)
    marker: dict = {}
    with atomic_output(spark, quarantine_out, marker) as staging:
        quarantine.write.parquet(staging)
        reasons = count_by_reason(spark.read.parquet(staging))
        marker["counts"] = {"quarantined": sum(reasons.values()), "quarantined_by_reason": reasons}
    # Hash by item_id into a fixed number of files, sorted: the same bytes whatever the input
    # partitioning or row order (the tournament itself never depends on them).
    answers = answer_columns(view_models, methods)
    label = [F.col(LABEL).alias(label_col)] if label_col else []
    predictions = valid_rows(answered).select(F.col(ID).alias(ITEM_ID), *label, *answers)
    if labels is not None:  # the verified class beside the model's own answer (the metrics leave these items out)
        verified = labels_frame(spark, labels[1]).select(ITEM_ID, F.col("label").alias(VERIFIED_LABEL))
        predictions = predictions.join(F.broadcast(verified), ITEM_ID, "left")
    predictions = predictions.repartition(settings.output_files, ITEM_ID).sortWithinPartitions(ITEM_ID)
    fs = FileSystem(spark)
    marker = {}
    with atomic_output(spark, out, marker) as staging:
        predictions.write.parquet(staging)
        classified = spark.read.parquet(staging).count()
        info = {
            "created_at": now(),
            "views": [v.name for v in view_models],
            "methods": list(methods),
            "primary_method": primary_method(methods),
            "label_column": label_col,
            "class_ids": view_models[0].class_ids,
            "seed": model.getSeed(),
            "candidates": model.getCandidates(),
            "top_k": model.getTopK(),
            **({"backoff_at": model.getBackoffAt(), "tree": tree_meta(view_models[0].tree)}
               if view_models[0].tree is not None else {}),
            "model": fs.qualify(model_dir),
            "items": source_ref(fs, items_path),
            "items_format": settings.items_format,
            "quarantine": fs.qualify(quarantine_out),
            "counts": {
                "items_in": classified + sum(reasons.values()),
                "classified": classified,
                "quarantined": sum(reasons.values()),
                "quarantined_by_reason": dict(sorted(reasons.items())),
            },
            "versions": versions(),
        }
        if labels is not None:
            verified = spark.read.parquet(staging).where(F.col(VERIFIED_LABEL).isNotNull()).count()
            info["labels"] = {"path": fs.qualify(labels[0]), "given": labels[1].num_rows, "verified_items": verified,
                              "not_among_classified": labels[1].num_rows - verified}
        fs.write_json(f"{staging}/{PREDICTIONS_INFO}", info)
        marker["counts"] = info["counts"]
    return info
