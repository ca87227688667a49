"""The stages that read predictions: evaluate (metrics.json, report.html), audit (likely
annotation errors), review (the queue a person checks) and diff (what changed since the last
predictions). Audit and review write a ranked list the same way (`_write_list`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pairspark import tracking
from pairspark.config import parse_binary
from pairspark.core.columns import VERIFIED_LABEL, confidence_col
from pairspark.errors import UsageError
from pairspark.pipeline.classify import predictions_info
from pairspark.pipeline.stage import now, stage, tracked
from pairspark.report import SUSPECTS_SHOWN, confidence_figures, render_report
from pairspark.spark.audit import audit_predictions, diff_predictions, with_item_columns
from pairspark.core.tournament import resolve_candidates
from pairspark.spark.evaluate import candidate_recall, evaluate_predictions
from pairspark.spark.io import TABLE_PREFIX, read_parquet, read_source, require_columns
from pairspark.spark.fs import FileSystem
from pairspark.spark.model_io import read_class_vectors, tree_of_meta
from pairspark.spark.publish import atomic_output
from pairspark.spark.review import REASONS as REVIEW_REASONS
from pairspark.spark.review import csv_frame as review_csv
from pairspark.spark.review import review_items

log = logging.getLogger("pairspark")


def evaluate(spark: SparkSession, predictions_dir: str, out: str, label_col: str | None = None,
             changes_dir: str | None = None, show_cols: list[str] | None = None, binary: str | None = None,
             experiment: str | None = None, review_dir: str | None = None) -> dict:
    """REPORT_DIR/metrics.json and REPORT_DIR/report.html (with the top suspected annotation errors
    and, from `changes_dir` (a diff's output), what changed since the previous run)."""
    params = {"predictions": predictions_dir, "out": out, "label_col": label_col, "binary": binary}
    with tracked("evaluate", experiment, params) as tracker, stage("evaluate", spark) as facts:
        fs = FileSystem(spark)
        info = predictions_info(fs, predictions_dir)
        predictions = read_parquet(spark, predictions_dir, "predictions")
        verified = None
        if VERIFIED_LABEL in predictions.columns:  # metrics on the items the model was not given the answer for
            verified = predictions.where(F.col(VERIFIED_LABEL).isNotNull()).count()
            predictions = predictions.where(F.col(VERIFIED_LABEL).isNull())
        label_col = label_col or info.get("label_column")
        report = evaluate_predictions(predictions, info["views"], info["methods"], info["class_ids"], label_col,
                                      parse_binary(binary), tree_of_meta(info["tree"]) if info.get("tree") else None)
        report["counts"].update(info["counts"])
        if verified is not None:
            report["counts"]["verified_excluded"] = verified  # every metric is over the other items
        report["primary_method"] = info["primary_method"]
        recall = _candidate_recall(spark, fs, predictions, info, label_col, report)
        if recall:
            report["candidates"] = recall
        basis = confidence_basis(fs, info)
        if basis:
            report["confidence_basis"] = basis
            if basis.get("warning"):
                log.warning("confidence: %s", basis["warning"])
        report["predictions"] = fs.qualify(predictions_dir)
        report["created_at"] = now()
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


def _candidate_recall(spark, fs: FileSystem, predictions, info: dict, label_col: str | None, report: dict) -> dict | None:
    """The candidate rule's recall (spark/evaluate.candidate_recall) where it is in effect: labelled
    items, a bracket narrower than the classes, and the model and items the predictions name still
    readable (else the report says why it has no figure, and nothing else changes)."""
    bracket = resolve_candidates(info.get("candidates", 0) or 0, len(info["class_ids"]))
    if not label_col or not report["counts"].get("labelled") or not 0 < bracket < len(info["class_ids"]):
        return None
    model_dir, items_path = info.get("model"), info.get("items")
    gone = {"bracket": bracket, "unavailable": "the model or the items the predictions were made from are gone"}
    if not model_dir or not items_path or not fs.exists(model_dir) or (
            not items_path.startswith(TABLE_PREFIX) and not fs.exists(items_path)):
        return gone
    try:
        items = read_source(spark, items_path, "items", info.get("items_format"))
    except UsageError:
        return gone
    return candidate_recall(predictions, items, read_class_vectors(spark, model_dir), label_col, bracket)


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
    with stage("audit", spark) as facts:
        fs = FileSystem(spark)
        info = predictions_info(fs, predictions_dir)
        label_col = label_col or info.get("label_column")
        if len(info["views"]) < 2 and not label_col:
            raise UsageError("an audit needs predictions with two views or a label column (--label-col)")
        predictions = read_parquet(spark, predictions_dir, "predictions")
        if label_col:
            require_columns(predictions, [label_col], "predictions")
        flagged = _with_shown(spark, audit_predictions(predictions, info["views"], label_col), info, items_path,
                              items_format, show_cols, "score")
        with _persisted(flagged) as flagged:
            by_kind = {r["kind"]: int(r["count"]) for r in flagged.groupBy("kind").count().collect()}
            summary = {"predictions": fs.qualify(predictions_dir), "label_column": label_col, "flagged": sum(by_kind.values()),
                       "by_kind": by_kind, "created_at": now()}
            _write_list(spark, fs, out, flagged, "suspects", ("suspects.csv", flagged.limit(csv_rows)), summary,
                        {"flagged": summary["flagged"]})
        facts.update(flagged=summary["flagged"], out=out)
    return summary


def review(spark: SparkSession, predictions_dir: str, out: str, below: float, label_col: str | None = None,
           items_path: str | None = None, show_cols: list[str] | None = None, csv_rows: int = 10_000,
           items_format: str | None = None) -> dict:
    """OUT/items (Parquet, the whole queue, best first), OUT/review.csv (its first `csv_rows`, arrays
    as text) and OUT/summary.json (counts per reason): spark/review.py says who is queued and why."""
    with stage("review", spark) as facts:
        fs = FileSystem(spark)
        info = predictions_info(fs, predictions_dir)
        label_col = label_col or info.get("label_column")
        predictions = read_parquet(spark, predictions_dir, "predictions")
        missing = [confidence_col(v) for v in info["views"] if confidence_col(v) not in predictions.columns]
        if missing:
            raise UsageError(f"{predictions_dir} has no {', '.join(missing)}: classify it again with this version")
        if label_col:
            require_columns(predictions, [label_col], "predictions")
        queue = _with_shown(spark, review_items(predictions, info["views"], label_col, below), info, items_path,
                            items_format, show_cols, "change_probability")
        with _persisted(queue) as queue:
            rows = queue.select(F.explode("reasons").alias("reason")).groupBy("reason").count().collect()
            items_queued = queue.count()
            summary = {"predictions": fs.qualify(predictions_dir), "below": below, "primary_view": info["views"][0],
                       "label_column": label_col, "items": items_queued,
                       "by_reason": {r: 0 for r in REVIEW_REASONS if r != "backoff_above_leaf" or info.get("tree")}
                       | {r["reason"]: int(r["count"]) for r in rows},
                       "created_at": now()}
            _write_list(spark, fs, out, queue, "items", ("review.csv", review_csv(queue).limit(csv_rows)), summary,
                        {"items": items_queued})
        facts.update(items=items_queued, out=out)
    return summary


def _with_shown(spark, ranked: DataFrame, info: dict, items_path: str | None, items_format: str | None,
                show_cols: list[str] | None, rank: str) -> DataFrame:
    """`ranked` (audit's list, review's queue, best first by `rank`) with the items' `show_cols`:
    of the items at `items_path`, else of those the predictions were classified from."""
    if not show_cols:
        return ranked
    items = (read_source(spark, items_path, "items", items_format) if items_path
             else read_source(spark, info["items"], "items", info.get("items_format")))
    require_columns(items, show_cols, "items table")
    return with_item_columns(ranked, items, show_cols, rank)


@contextmanager
def _persisted(frame: DataFrame) -> Iterator[DataFrame]:
    """`frame` persisted while the block counts and writes it."""
    frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        yield frame
    finally:
        frame.unpersist()


def _write_list(spark, fs: FileSystem, out: str, ranked: DataFrame, folder: str, csv: tuple[str, DataFrame],
                summary: dict, counts: dict) -> None:
    """Published together as OUT: OUT/FOLDER (Parquet, one file: every row, in order), the csv
    (name, frame: its first rows, for a spreadsheet) and OUT/summary.json."""
    with atomic_output(spark, out, {"counts": counts}) as staging:
        ranked.coalesce(1).write.parquet(f"{staging}/{folder}")
        fs.write_text(f"{staging}/{csv[0]}", csv[1].toPandas().to_csv(index=False))
        fs.write_json(f"{staging}/summary.json", summary)


def diff(spark: SparkSession, old_dir: str, new_dir: str, out: str) -> dict:
    """OUT/changes (Parquet: item_id, view, old_class, new_class) and OUT/summary.json."""
    with stage("diff", spark) as facts:
        fs = FileSystem(spark)
        old_info, new_info = predictions_info(fs, old_dir), predictions_info(fs, new_dir)
        view_names = [v for v in new_info["views"] if v in old_info["views"]]
        if not view_names:
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
                              read_parquet(spark, new_dir, "new predictions"), view_names) as (changes, summary):
            summary.update(old=fs.qualify(old_dir), new=fs.qualify(new_dir), created_at=now())
            with atomic_output(spark, out, {"counts": {"changed": summary["changed"]}}) as staging:
                changes.coalesce(max(1, min(8, summary["compared"] // 1_000_000))).write.parquet(f"{staging}/changes")
                fs.write_json(f"{staging}/summary.json", summary)
        facts.update(compared=summary["compared"], changed=summary["changed"], out=out)
    return summary
