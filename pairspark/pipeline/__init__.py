"""The three stages as functions of (SparkSession, paths, settings): fit, classify, evaluate, run.

The CLI and the spark-submit jobs call these; each stage publishes its output atomically.
"""

from __future__ import annotations

import logging
import platform
import time
from contextlib import contextmanager
from datetime import datetime, timezone

import numba
import numpy as np
import pandas as pd
import pyarrow as pa
import pyspark
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from pairspark import __version__, reuse, tracking
from pairspark.config import Settings, parse_binary
from pairspark.core.methods import primary_method
from pairspark.errors import UsageError
from pairspark.ml import PairwiseTournamentClassifier, PairwiseTournamentModel, stop_on_bad_rows
from pairspark.params import CLASSIFY_PARAMS
from pairspark.progress import progress
from pairspark.spark.arrow_scan import ArrowScan, eligibility
from pairspark.spark.transform import answer_fields
from pairspark.views import View, format_views
from pairspark.report import SUSPECTS_SHOWN, confidence_figures, render_report
from pairspark.spark.compat import create_frame
from pairspark.spark.audit import audit_predictions, diff_predictions, with_item_columns
from pairspark.spark.evaluate import evaluate_predictions
from pairspark.spark.io import (ITEM_ID, REASON, TABLE_PREFIX, VERIFIED_LABEL, arrow_batch_rows, by_name, check_item_dims,
                                labels_frame, read_labels, read_parquet, read_source, require_columns)
from pairspark.spark.publish import FileSystem, atomic_output, output_lock, publish_table, recover, repoint
from pairspark.spark.review import REASONS as REVIEW_REASONS
from pairspark.spark.review import csv_frame as review_csv
from pairspark.spark.review import review_items

log = logging.getLogger("pairspark")

PREDICTIONS_INFO = "_pairspark.json"
_ID, _LABEL = "_pairspark_item_id", "_pairspark_label"  # classify's persisted result: id and label of every row  # '_' prefix: ignored by Spark, pandas and pyarrow readers


@contextmanager
def _stage(name: str, spark: SparkSession | None = None, total_items: int | None = None):
    """Times the stage and logs one "done" line; given spark, logs progress on long Spark stages."""
    start = time.perf_counter()
    facts: dict = {}
    with progress(spark, name, total_items):
        yield facts
    seconds = time.perf_counter() - start
    details = " ".join(f"{k}={v}" for k, v in facts.items())
    log.info("%s done in %.1fs %s", name, seconds, details)
    if (tracker := tracking.active()) is not None:
        tracker.stage_seconds(name, seconds)


@contextmanager
def _tracked(command: str, experiment: str | None, params: dict):
    """An MLflow run around a command when tracking is on (MLFLOW_TRACKING_URI or an experiment;
    pairspark/tracking.py), else nothing; a command inside another (run's fit) logs to the outer run."""
    if not tracking.tracking_enabled(experiment):
        yield None
        return
    with tracking.tracked(command, experiment, params) as tracker:
        yield tracker


def _versions() -> dict[str, str]:
    return {
        "pairspark": __version__,
        "python": platform.python_version(),
        "pyspark": pyspark.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "pyarrow": pa.__version__,
        "numba": numba.__version__,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def fit(spark: SparkSession, items_path: str, classes_path: str, views: list[View], out: str, settings: Settings,
        last_model: str | None = None) -> dict:
    """MODEL_DIR from the items and classes tables, through PairwiseTournamentClassifier; or, under
    --warm-start, the previous model itself when nothing the fit depends on changed (reuse.py).
    `last_model`: where the previous run's model is, for --warm-start auto (default: `out`)."""
    params = {**settings.to_json(), "items": items_path, "classes": classes_path, "views": format_views(views), "out": out}
    with _tracked("fit", settings.experiment, params) as tracker, _stage("fit", spark) as facts:
        items = _items(spark, items_path, settings)
        fs = FileSystem(spark)
        estimator = PairwiseTournamentClassifier(classesPath=classes_path, classesFormat=settings.classes_format,
                                                 views=format_views(views), labelsPath=settings.labels, **settings.params)
        versions = _versions()
        scan = _arrow_scan(items, items_path, views, None, settings)
        previous = reuse.previous_model(fs, settings.warm_start, last_model or out)
        # taken before the fit reads anything (an input rewritten meanwhile differs tomorrow), and
        # recorded under off too: tomorrow's run may reuse this one's model
        current = reuse.fingerprint(spark, fs, items, {"items": items_path, "classes": classes_path, "labels": settings.labels},
                                    estimator, settings.to_json(), versions, arrow_reader=scan is not None)
        warm = reuse.decide(fs, previous, current) if previous else None
        model = None
        if warm and warm["reused"]:
            try:
                model = PairwiseTournamentModel.load(previous)
            except Exception as exc:  # noqa: BLE001  (a damaged model: fit instead, and say why)
                warm = {"model": warm["model"], "reused": False,
                        "reason": f"it could not be loaded ({str(exc).splitlines()[0][:200]})"}
        run_facts = {"settings": settings.to_json(),
                     "inputs": {"items": source_ref(fs, items_path), "classes": source_ref(fs, classes_path),
                                **({"labels": fs.qualify(settings.labels)} if settings.labels else {})}}
        if model is not None:
            log.info("fit: the inputs of %s are unchanged; its model is reused (%s reads of the items and %s s saved)",
                     warm["model"], warm["reads_saved"], warm["seconds_saved"])
            model.meta = {**model.meta, "created_at": _now(), **run_facts, "warm_start": warm}
        else:
            if warm:
                log.info("fit: a cold fit, %s cannot be reused: %s", warm["model"], warm["reason"])
            if settings.on_invalid == "error":
                _stop_on_invalid_items(spark, items, estimator, views, items_path)
            facts.update(reader="arrow" if scan is not None else "spark")
            model = estimator.fit_items(items, scan)
            model.meta = {"created_at": _now(), **model.meta, **run_facts, "versions": versions,
                          **({"fingerprint": current} if isinstance(current, dict) else {}),
                          **({"warm_start": warm} if warm else {})}
        with atomic_output(spark, out, {"counts": model.meta["counts"]}) as staging:
            model.write().save(staging)
            fs.write_json(f"{staging}/meta.json", model.meta)  # a readable copy of the metadata's "pairspark" part
        confident = {v["name"]: v["confident_items"] for v in model.meta["views"]}
        facts.update(valid_items=model.meta["counts"]["valid_items"], confident=confident, out=out,
                     reused=bool(warm and warm["reused"]))
        if tracker is not None:
            tracker.json(model.meta, "model_meta.json")
            uri = tracker.model(model)  # mlflow.spark format: mlflow.spark.load_model gives it back
            tracker.client.set_tag(tracker.run_id, "pairspark.model_uri", uri)
    return model.meta


def source_ref(fs: FileSystem, source: str) -> str:
    """How outputs record an input: a table as table:NAME, a path fully qualified."""
    return source if source.startswith(TABLE_PREFIX) else fs.qualify(source)


def _items(spark: SparkSession, items_path: str, settings: Settings) -> DataFrame:
    items = read_source(spark, items_path, "items", settings.items_format)
    return items.repartition(settings.partitions) if settings.partitions else items


def _stop_on_invalid_items(spark, items: DataFrame, estimator, views: list[View], where: str) -> None:
    """--on-invalid error at fit: name the first three bad rows before any fitting."""
    from pairspark.errors import InvalidRowsError
    from pairspark.spark.io import check_item_dims, first_invalid, load_classes, vector_column
    from pairspark.spark.transform import with_duplicate_flag

    tables = load_classes(spark, estimator.getClassesPath(), views, estimator.classes_format())
    dims = {n: t.dim for n, t in tables.items()}
    require_columns(items, [ITEM_ID, *[v.column for v in views]], "items table")
    check_item_dims(items, views, dims)
    columns = [ITEM_ID, *dict.fromkeys(v.column for v in views)]
    arrays = items.select(ITEM_ID, *[vector_column(items, c, "items").alias(c) for c in columns[1:]])
    bad = first_invalid(with_duplicate_flag(arrays), views, dims)
    if bad:
        shown = ", ".join(f"item_id={item!r} ({reason})" for item, reason in bad)
        raise InvalidRowsError(f"invalid item rows in {where}, first: {shown}; use --on-invalid quarantine to set them aside")


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
    with _stage("classify", spark) as facts:
        model = PairwiseTournamentModel.load(model_dir)
        # this run's classify-time settings win over the model's (what fit decided stays)
        model._set(**{p: v for p, v in settings.params.items() if p in CLASSIFY_PARAMS})
        methods = model.run_methods
        items = _items(spark, items_path, settings)
        if label_col:
            require_columns(items, [label_col], "items table")
        views = [View(v.name, v.column) for v in model.view_models]
        require_columns(items, [ITEM_ID, *[v.column for v in views]], "items table")
        check_item_dims(items, views, {v.name: v.dim for v in model.view_models})
        labels_path = settings.labels or model.labels_path()
        labels = (labels_path, read_labels(spark, labels_path, model.view_models[0].class_ids)) if labels_path else None
        scan = _arrow_scan(items, items_path, views, label_col, settings)
        answers = [f.name for f in answer_fields(model.view_models, model.run_methods)]
        if scan is not None:
            facts.update(reader="arrow")
            batch_rows = arrow_batch_rows(spark)
            classified = scan.classified(model.view_models, methods, model.getSeed(), model.getCandidates(), model.getTopK(), _ID,
                                         (label_col, _LABEL) if label_col else None, batch_rows)
            result = scan.with_duplicates(classified, _ID, [a for a in answers if a != REASON])
            result = result.persist(StorageLevel.MEMORY_AND_DISK)
            set_aside = lambda: scan.set_aside(result)  # noqa: E731
        else:
            facts.update(reader="spark")
            # one pass, persisted: the answers of every row, and the input row only where it is set
            # aside (a valid row's input columns are nulled: persisting every vector would hold the
            # whole catalog in memory and on disk again)
            answered = model.transform(items)
            invalid = F.col(REASON).isNotNull()
            result = answered.select(
                F.col(ITEM_ID).cast("string").alias(_ID), *([F.col(label_col).cast("string").alias(_LABEL)] if label_col else []),
                *[F.when(invalid, by_name(c)).alias(c) for c in items.columns], *answers,
            ).persist(StorageLevel.MEMORY_AND_DISK)
            set_aside = lambda: result.where(invalid).select(*[by_name(c) for c in items.columns], REASON)  # noqa: E731
        try:
            info = _publish_classified(spark, result, set_aside, model, settings, label_col, items_path, model_dir, out,
                                       quarantine_out, labels)
        finally:
            result.unpersist()
        if settings.predictions_table and publish_table:
            info["table"] = predictions_table(spark, out, settings.predictions_table)
        facts.update(**{k: v for k, v in info["counts"].items() if k != "quarantined_by_reason"}, out=out)
    return info


def predictions_table(spark: SparkSession, predictions_dir: str, name: str) -> dict:
    """Publish a predictions directory as the metastore table `name` (publish.publish_table)."""
    published = publish_table(spark, read_parquet(spark, predictions_dir, "predictions"), name)
    log.info("predictions published as table %s (version %s)", name, published["version"])
    return published


def _arrow_scan(items: DataFrame, items_path: str, views: list[View], label_col: str | None,
                settings: Settings) -> ArrowScan | None:
    """The pyarrow reader for these items (spark/arrow_scan.py) when --items-reader allows it and
    the source is eligible; None: Spark's reader. --items-reader arrow on an ineligible source: exit 2."""
    if settings.items_reader == "spark":
        return None
    reason = None
    if items_path.startswith(TABLE_PREFIX) or (settings.items_format or "parquet") != "parquet":
        reason = "the items are not a Parquet path"
    elif settings.partitions:
        reason = "--partitions is given (the arrow reader runs one task per row group)"
    else:
        scan = eligibility(items, list(dict.fromkeys(v.column for v in views)), [ITEM_ID] + ([label_col] if label_col else []))
        if isinstance(scan, ArrowScan):
            return scan
        reason = scan
    if settings.items_reader == "arrow":
        raise UsageError(f"--items-reader arrow cannot read these items: {reason}")
    log.info("items read by Spark's reader: %s", reason)
    return None


def _publish_classified(spark, result, set_aside, model, settings, label_col, items_path, model_dir, out,
                        quarantine_out, labels: tuple[str, pa.Table] | None) -> dict:
    """Quarantine first, then predictions (whose counts refer to it), each published atomically.
    `set_aside()`: the invalid rows as the items hold them, plus REASON."""
    views, methods = model.view_models, model.run_methods
    quarantine = set_aside()
    if settings.on_invalid == "error":
        stop_on_bad_rows(quarantine, items_path)
    marker: dict = {}
    with atomic_output(spark, quarantine_out, marker) as staging:
        quarantine.write.parquet(staging)
        reasons = {r[REASON]: r["count"] for r in spark.read.parquet(staging).groupBy(REASON).count().collect()}
        marker["counts"] = {"quarantined": sum(reasons.values()), "quarantined_by_reason": reasons}
    # Hash by item_id into a fixed number of files, sorted: the same bytes whatever the input
    # partitioning or row order (the tournament itself never depends on them).
    answers = [f.name for f in answer_fields(views, methods) if f.name != REASON]
    label = [F.col(_LABEL).alias(label_col)] if label_col else []
    predictions = result.where(F.col(REASON).isNull()).select(F.col(_ID).alias(ITEM_ID), *label, *answers)
    if labels is not None:  # the verified class beside the model's own answer (the metrics leave these items out)
        verified = labels_frame(spark, labels[1]).select(ITEM_ID, F.col("label").alias(VERIFIED_LABEL))
        predictions = predictions.join(F.broadcast(verified), ITEM_ID, "left")
    predictions = predictions.repartition(settings.output_files, ITEM_ID).sortWithinPartitions(ITEM_ID)
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
            "seed": model.getSeed(),
            "candidates": model.getCandidates(),
            "top_k": model.getTopK(),
            "model": FileSystem(spark).qualify(model_dir),
            "items": source_ref(FileSystem(spark), items_path),
            "items_format": settings.items_format,
            "quarantine": FileSystem(spark).qualify(quarantine_out),
            "counts": {
                "items_in": classified + sum(reasons.values()),
                "classified": classified,
                "quarantined": sum(reasons.values()),
                "quarantined_by_reason": dict(sorted(reasons.items())),
            },
            "versions": _versions(),
        }
        if labels is not None:
            verified = spark.read.parquet(staging).where(F.col(VERIFIED_LABEL).isNotNull()).count()
            info["labels"] = {"path": FileSystem(spark).qualify(labels[0]), "given": labels[1].num_rows, "verified_items": verified,
                              "not_among_classified": labels[1].num_rows - verified}
        FileSystem(spark).write_json(f"{staging}/{PREDICTIONS_INFO}", info)
        marker["counts"] = info["counts"]
    return info


def evaluate(spark: SparkSession, predictions_dir: str, out: str, label_col: str | None = None,
             changes_dir: str | None = None, show_cols: list[str] | None = None, binary: str | None = None,
             experiment: str | None = None, review_dir: str | None = None) -> dict:
    """REPORT_DIR/metrics.json and REPORT_DIR/report.html (with the top suspected annotation errors
    and, from `changes_dir` (a diff's output), what changed since the previous run)."""
    params = {"predictions": predictions_dir, "out": out, "label_col": label_col, "binary": binary}
    with _tracked("evaluate", experiment, params) as tracker, _stage("evaluate", spark) as facts:
        fs = FileSystem(spark)
        info = _predictions_info(fs, predictions_dir)
        predictions = read_parquet(spark, predictions_dir, "predictions")
        verified = None
        if VERIFIED_LABEL in predictions.columns:  # metrics on the items the model was not given the answer for
            verified = predictions.where(F.col(VERIFIED_LABEL).isNotNull()).count()
            predictions = predictions.where(F.col(VERIFIED_LABEL).isNull())
        label_col = label_col or info.get("label_column")
        report = evaluate_predictions(predictions, info["views"], info["methods"], info["class_ids"], label_col,
                                      parse_binary(binary))
        report["counts"].update(info["counts"])
        if verified is not None:
            report["counts"]["verified_excluded"] = verified  # every metric is over the other items
        report["primary_method"] = info["primary_method"]
        basis = confidence_basis(fs, info)
        if basis:
            report["confidence_basis"] = basis
            if basis.get("warning"):
                log.warning("confidence: %s", basis["warning"])
        report["predictions"] = fs.qualify(predictions_dir)
        report["created_at"] = _now()
        suspects = _suspects(spark, predictions, info, label_col, show_cols or [])
        changes = fs.read_json(f"{changes_dir}/summary.json") if changes_dir and fs.exists(f"{changes_dir}/summary.json") else None
        if changes:
            report["changes"] = {k: v for k, v in changes.items() if k != "by_pair"}
        if review_dir and fs.exists(f"{review_dir}/summary.json"):
            queued = fs.read_json(f"{review_dir}/summary.json")
            report["review"] = {k: queued[k] for k in ("items", "below", "primary_view", "by_reason")}
        figures = confidence_figures(report)
        page = render_report(report, suspects, report["class_counts"], changes, figures)
        with atomic_output(spark, out, {"counts": report["counts"]}) as staging:
            fs.mkdirs(staging)
            fs.write_json(f"{staging}/metrics.json", report)
            fs.write_text(f"{staging}/report.html", page)
            for name, png in figures.items():
                fs.write_bytes(f"{staging}/{name}", png)
        facts.update(items=report["counts"]["items"], out=out)
        if tracker is not None:
            tracker.metrics(tracking.report_metrics(report))
            tracker.json(report, "report/metrics.json")
            tracker.text(page, "report/report.html")
    return report


def confidence_basis(fs: FileSystem, info: dict) -> dict | None:
    """What the predictions' confidence was calibrated on (the model's meta.json), and a warning
    where that cannot support a calibrated number: no verified labels (the report says how it errs)."""
    meta_path = f"{info.get('model', '')}/meta.json"
    if not info.get("model") or not fs.exists(meta_path):
        return None
    calibration = fs.read_json(meta_path).get("calibration") or {}
    fitted_on = calibration.get("fitted_on")
    if not fitted_on:
        return None
    basis = {"fitted_on": fitted_on}
    if "verified labels" not in fitted_on:
        if len(info.get("views", [])) == 2:
            basis["warning"] = ("no verified labels: each view's confidence says how often the other view's zero-shot "
                                "answer confirms answers like this one. Where both views mistake one class for another "
                                "the same way it overstates, and where the other view's zero-shot answers are weak it "
                                "understates. A few verified labels per class (--labels) calibrate it on them.")
        else:
            basis["warning"] = ("one view and no verified labels: there is no second opinion, so the confidence is "
                                "fitted to the view's own confident answers and overstates on the classes the view "
                                "confuses; read it as a ranking. A few verified labels per class (--labels) calibrate it "
                                "on them.")
    return basis


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
        audit = with_item_columns(audit, read_source(spark, info["items"], "items", info.get("items_format")), show_cols)
    return [row.asDict() for row in audit.collect()]


def audit(spark: SparkSession, predictions_dir: str, out: str, label_col: str | None = None, items_path: str | None = None,
          show_cols: list[str] | None = None, csv_rows: int = 10_000, items_format: str | None = None) -> dict:
    """OUT/suspects (Parquet, every flagged item, best first), OUT/suspects.csv (the first
    `csv_rows`, for spreadsheets) and OUT/summary.json (counts per kind)."""
    with _stage("audit", spark) as facts:
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
            items = (read_source(spark, items_path, "items", items_format) if items_path
                     else read_source(spark, info["items"], "items", info.get("items_format")))
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


def review(spark: SparkSession, predictions_dir: str, out: str, below: float, label_col: str | None = None,
           items_path: str | None = None, show_cols: list[str] | None = None, csv_rows: int = 10_000,
           items_format: str | None = None) -> dict:
    """OUT/items (Parquet, the whole queue, best first), OUT/review.csv (its first `csv_rows`, arrays
    as text) and OUT/summary.json (counts per reason): spark/review.py says who is queued and why."""
    with _stage("review", spark) as facts:
        fs = FileSystem(spark)
        info = _predictions_info(fs, predictions_dir)
        label_col = label_col or info.get("label_column")
        predictions = read_parquet(spark, predictions_dir, "predictions")
        missing = [f"{v}_confidence" for v in info["views"] if f"{v}_confidence" not in predictions.columns]
        if missing:
            raise UsageError(f"{predictions_dir} has no {', '.join(missing)}: classify it again with this version")
        if label_col:
            require_columns(predictions, [label_col], "predictions")
        queue = review_items(predictions, info["views"], label_col, below)
        if show_cols:
            items = (read_source(spark, items_path, "items", items_format) if items_path
                     else read_source(spark, info["items"], "items", info.get("items_format")))
            require_columns(items, show_cols, "items table")
            queue = with_item_columns(queue, items, show_cols, "change_probability")
        queue = queue.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            rows = queue.select(F.explode("reasons").alias("reason")).groupBy("reason").count().collect()
            items_queued = queue.count()
            summary = {"predictions": fs.qualify(predictions_dir), "below": below, "primary_view": info["views"][0],
                       "label_column": label_col, "items": items_queued,
                       "by_reason": {r: 0 for r in REVIEW_REASONS} | {r["reason"]: int(r["count"]) for r in rows},
                       "created_at": _now()}
            with atomic_output(spark, out, {"counts": {"items": items_queued}}) as staging:
                queue.coalesce(1).write.parquet(f"{staging}/items")
                fs.write_text(f"{staging}/review.csv", review_csv(queue).limit(csv_rows).toPandas().to_csv(index=False))
                fs.write_json(f"{staging}/summary.json", summary)
        finally:
            queue.unpersist()
        facts.update(items=items_queued, out=out)
    return summary


def diff(spark: SparkSession, old_dir: str, new_dir: str, out: str) -> dict:
    """OUT/changes (Parquet: item_id, view, old_class, new_class) and OUT/summary.json."""
    with _stage("diff", spark) as facts:
        fs = FileSystem(spark)
        old_info, new_info = _predictions_info(fs, old_dir), _predictions_info(fs, new_dir)
        views = [v for v in new_info["views"] if v in old_info["views"]]
        if not views:
            raise UsageError(f"{old_dir} and {new_dir} share no view")
        old_ids, new_ids = set(old_info.get("class_ids") or []), set(new_info.get("class_ids") or [])
        if old_ids and new_ids and old_ids != new_ids:
            def few(ids: set) -> str:
                shown = sorted(ids)[:5]
                return f"{len(ids)} ({', '.join(shown)}{', ...' if len(ids) > len(shown) else ''})" if ids else "0"

            raise UsageError(f"{old_dir} and {new_dir} were classified with different class tables: classes only in the old "
                             f"{few(old_ids - new_ids)}, only in the new {few(new_ids - old_ids)}; "
                             "a diff compares predictions made with the same classes")
        # the changes are lazy on a persisted join: write them before leaving the block
        with diff_predictions(read_parquet(spark, old_dir, "old predictions"),
                              read_parquet(spark, new_dir, "new predictions"), views) as (changes, summary):
            summary.update(old=fs.qualify(old_dir), new=fs.qualify(new_dir), created_at=_now())
            with atomic_output(spark, out, {"counts": {"changed": summary["changed"]}}) as staging:
                changes.coalesce(max(1, min(8, summary["compared"] // 1_000_000))).write.parquet(f"{staging}/changes")
                fs.write_json(f"{staging}/summary.json", summary)
        facts.update(compared=summary["compared"], changed=summary["changed"], out=out)
    return summary


_RUN_OUTPUTS = ("model", "predictions", "quarantine", "changes", "review", "report")


def _check_run_paths(fs: FileSystem, items_path: str, classes_path: str, out: str) -> None:
    """Refuse an OUT that is, or is inside, an input (or holds one: a run replaces OUT as a whole)."""
    q_out = fs.qualify(out).rstrip("/")
    for flag, path in (("--items", items_path), ("--classes", classes_path)):
        if path.startswith(TABLE_PREFIX):
            continue
        q_in = fs.qualify(path.rstrip("/")).rstrip("/")
        if q_out == q_in or q_out.startswith(q_in + "/"):
            raise UsageError(f"--out {out} is {'the' if q_out == q_in else 'inside the'} {flag} path {path}; "
                             "choose an output folder elsewhere")
        if q_in.startswith(q_out + "/"):
            raise UsageError(f"{flag} {path} is inside --out {out}, which a run replaces as a whole; "
                             "choose another output folder")


def _check_run_folder(fs: FileSystem, out: str) -> None:
    """Refuse to replace an existing OUT that is not a run's output folder (a run replaces all of it)."""
    if not fs.exists(out):
        return
    if not fs.is_dir(out):
        raise UsageError(f"--out {out} is a file, not a folder")

    def ours(name: str) -> bool:  # outputs, markers, Hadoop checksums, older runs' leftovers
        return (name in (*_RUN_OUTPUTS, "_SUCCESS") or (name.startswith(".") and name.endswith(".crc"))
                or any(name.startswith((f"{o}.staging-", f"{o}.old-")) for o in _RUN_OUTPUTS))

    foreign = [n for n in fs.list_names(out) if not ours(n)]
    if foreign:
        raise UsageError(f"--out {out} holds more than a pairspark run ({', '.join(foreign[:5])}"
                         f"{', ...' if len(foreign) > 5 else ''}) and a run replaces the whole folder; "
                         "choose a new or empty folder")


def _previous_predictions(fs: FileSystem, previous: str | None, out: str, views: list[View]) -> str | None:
    """The predictions to diff against: `previous`, else OUT/predictions when the last run left some."""
    own = f"{out}/predictions"
    if previous:
        previous = previous.rstrip("/")
        if not fs.exists(f"{previous}/{PREDICTIONS_INFO}"):
            if fs.qualify(previous) == fs.qualify(own):
                log.warning("--previous %s does not exist yet (the first run into %s): no changes to report", previous, out)
                return None
            raise UsageError(f"--previous {previous} holds no pairspark predictions ({PREDICTIONS_INFO} missing)")
        candidate = previous
    elif fs.exists(f"{own}/{PREDICTIONS_INFO}"):
        candidate = own
    else:
        return None
    if not set(fs.read_json(f"{candidate}/{PREDICTIONS_INFO}").get("views", [])) & {v.name for v in views}:
        if previous:
            raise UsageError(f"--previous {previous} shares no view with this run ({', '.join(v.name for v in views)})")
        log.warning("the last run's predictions in %s share no view with this run: no changes to report", candidate)
        return None
    log.info("changes are reported against %s", candidate)
    return candidate


def _repoint_outputs(fs: FileSystem, staging: str, out: str) -> None:
    """Paths recorded by the stages (_pairspark.json's model and quarantine, summary.json's new,
    metrics.json's predictions, the report page) name STAGING/...: make them name OUT/..."""
    for output in fs.list_names(staging):
        for name in fs.list_names(f"{staging}/{output}"):
            if name.endswith((".json", ".html")):
                path = f"{staging}/{output}/{name}"
                text = fs.read_text(path)
                if (fixed := repoint(text, staging, out)) != text:
                    fs.write_text(path, fixed)


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
    """fit, classify, (diff against the previous predictions,) review, evaluate into OUT/model,
    OUT/predictions, OUT/quarantine, (OUT/changes,) OUT/review, OUT/report, published together: readers see the last run's set
    or this one's, never a mix. The previous predictions are `previous`, else OUT/predictions of the
    last run there (`--previous OUT/predictions`, the nightly cron line, stays readable until the
    new set replaces it). One run per OUT at a time (OUT.lock)."""
    out = out.rstrip("/")
    fs = FileSystem(spark)
    _check_run_paths(fs, items_path, classes_path, out)
    # every argument checked before any work: the items' columns named by the options
    named = [c for c in [label_col, *(show_cols or [])] if c]
    if named:
        require_columns(_items(spark, items_path, settings), named, "items table")
    params = {**settings.to_json(), "items": items_path, "classes": classes_path, "views": format_views(views),
              "out": out, "label_col": label_col, "previous": previous}
    with _tracked("run", settings.experiment, params) as tracker, output_lock(fs, out) as lock:
        recover(fs, out)
        _check_run_folder(fs, out)
        previous = _previous_predictions(fs, previous, out, views)
        marker: dict = {}
        # the whole run goes into one staging folder beside OUT, published as OUT in one swap
        with atomic_output(fs, out, marker) as staging:
            fit(spark, items_path, classes_path, views, f"{staging}/model", settings, last_model=f"{out}/model")
            classify(spark, items_path, f"{staging}/model", f"{staging}/predictions", settings, label_col,
                     f"{staging}/quarantine", publish_table=False)
            changes = None
            if previous:
                changes = f"{staging}/changes"
                diff(spark, previous, f"{staging}/predictions", changes)
            review(spark, f"{staging}/predictions", f"{staging}/review", settings.review_below, label_col,
                   items_path, show_cols, items_format=settings.items_format)
            report = evaluate(spark, f"{staging}/predictions", f"{staging}/report", label_col, changes, show_cols,
                              settings.binary, review_dir=f"{staging}/review")
            _repoint_outputs(fs, staging, out)
            marker.update(created_at=_now(), outputs=[n for n in fs.list_names(staging) if n in _RUN_OUTPUTS],
                          counts=report["counts"], previous=fs.qualify(previous) if previous else None)
            lock.check()
        report = repoint(report, staging, out)
        if settings.predictions_table:  # from the published predictions, once they are OUT's
            report["table"] = predictions_table(spark, f"{out}/predictions", settings.predictions_table)
        if tracker is not None:  # the published report, its paths naming OUT
            tracker.json(report, "report/metrics.json")
            tracker.text(fs.read_text(f"{out}/report/report.html"), "report/report.html")
    return report


def embed(spark: SparkSession, items_path: str, text_cols: list[str], out: str, model: str = "minilm",
          batch_size: int = 64, partitions: int | None = None, items_format: str | None = None) -> dict:
    """The items with one array<float> column `<col>_embedding` per text column (embed.py),
    written to `out` atomically; null/empty text gets a null vector (quarantined downstream)."""
    from pairspark.embed import ENCODERS, embed_series_udf

    if model not in ENCODERS:
        raise UsageError(f"unknown model {model!r}; available: {', '.join(ENCODERS)}")
    with _stage("embed", spark) as facts:
        items = read_source(spark, items_path, "items", items_format)
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


def embed_classes(spark: SparkSession, names: list[str], views: list[str], out: str,
                  prompts: list[str] | tuple[str, ...] | None = None, model: str = "minilm", batch_size: int = 64) -> dict:
    """A classes table (class_id, one prompt-vector column per view) from class names: one row per
    class and prompt template, every view holding the same text embedding of template.format(name)
    (a text encoder has one space). Classes with several rows are ensembled by load_classes. No
    templates: embed.PROMPT_TEMPLATES (docs/METHOD.md, "Several prompts per class")."""
    from pairspark.embed import PROMPT_TEMPLATES, encoder

    templates = list(dict.fromkeys([prompts] if isinstance(prompts, str) else prompts or PROMPT_TEMPLATES))
    missing = [t for t in templates if "{}" not in t]
    if missing:
        raise UsageError(f"--prompt needs a {{}} where the class name goes, got {missing[0]!r}")
    if len(set(names)) != len(names) or not all(n.strip() for n in names):
        raise UsageError("class names must be distinct and non-empty")
    if len(names) < 2:
        raise UsageError("at least 2 class names are needed")
    with _stage("embed-classes", spark) as facts:
        texts = [(name, template.format(name)) for name in names for template in templates]
        vectors = encoder(model).encode([text for _, text in texts], batch_size)
        columns = {"class_id": pa.array([name for name, _ in texts], pa.string())}
        for view in views:
            columns[view] = pa.array(list(vectors), pa.list_(pa.float32()))
        table = pa.table(columns)
        with atomic_output(spark, out, {"counts": {"classes": len(names), "rows": len(texts)}}) as staging:
            create_frame(spark, table, from_arrow_schema(table.schema)).coalesce(1).write.parquet(staging)
        facts.update(classes=len(names), rows=len(texts), out=out)
    return {"classes": len(names), "rows": len(texts), "views": views, "prompts": templates, "model": model,
            "dim": int(vectors.shape[1])}
