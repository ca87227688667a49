"""Evaluate: confusion matrices by grouped counts in Spark, metrics from them on the driver."""

from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pairspark.core.metrics import metrics_from_confusion
from pairspark.errors import UsageError


def confusion_from_spark(df: DataFrame, reference: str, predicted: str, classes: list[str]) -> tuple[np.ndarray, list[str], int]:
    """Confusion matrix of two string columns; values outside `classes` are appended in sorted order.

    Rows where either column is null are left out and counted (third return value).
    """
    rows = df.groupBy(reference, predicted).count().collect()
    missing = sum(r["count"] for r in rows if r[reference] is None or r[predicted] is None)
    known = set(classes)
    extra = sorted({v for r in rows for v in (r[reference], r[predicted]) if v is not None and v not in known})
    order = list(classes) + extra
    index = {c: i for i, c in enumerate(order)}
    confusion = np.zeros((len(order), len(order)), dtype=np.int64)
    for r in rows:
        if r[reference] is not None and r[predicted] is not None:
            confusion[index[r[reference]], index[r[predicted]]] += r["count"]
    return confusion, order, int(missing)


def _scored(df: DataFrame, reference: str, predicted: str, classes: list[str]) -> dict:
    confusion, order, missing = confusion_from_spark(df, reference, predicted, classes)
    metrics = metrics_from_confusion(confusion, order)
    metrics["reference_column"], metrics["predicted_column"] = reference, predicted
    metrics["rows_skipped_null"] = missing
    return metrics


def evaluate_predictions(
    predictions: DataFrame,
    view_names: list[str],
    methods: list[str],
    classes: list[str],
    label_col: str | None = None,
    binary: dict[str, list[str]] | None = None,
) -> dict:
    """metrics.json content: counts, agreement (second view is the reference), vs_label, class
    counts, and per binary group (classes in the group vs the rest) the same collapsed."""
    predictions = predictions.cache()
    try:
        report: dict = {"counts": {"items": predictions.count()}, "views": view_names, "methods": methods}
        report["class_counts"] = {
            v: {m: {r[0]: int(r[1]) for r in predictions.groupBy(f"{v}_{m}").count().collect() if r[0] is not None}
                for m in methods}
            for v in view_names
        }
        if len(view_names) == 2:
            predicted_view, reference_view = view_names
            report["agreement"] = {
                "reference_view": reference_view,
                "predicted_view": predicted_view,
                **{m: _scored(predictions, f"{reference_view}_{m}", f"{predicted_view}_{m}", classes) for m in methods},
            }
        if label_col:
            if label_col not in predictions.columns:
                raise UsageError(
                    f"predictions have no label column {label_col!r} (columns: {', '.join(predictions.columns)}); "
                    "pass --label-col to classify as well"
                )
            report["label_column"] = label_col
            report["counts"]["labelled"] = predictions.where(F.col(label_col).isNotNull()).count()
            report["vs_label"] = {
                v: {m: _scored(predictions, label_col, f"{v}_{m}", classes) for m in methods} for v in view_names
            }
        if binary:
            report["binary"] = {group: _binary(predictions, group, members, view_names, methods, label_col, classes)
                                for group, members in binary.items()}
        return report
    finally:
        predictions.unpersist()



def _binary(df: DataFrame, group: str, members: list[str], view_names: list[str], methods: list[str],
            label_col: str | None, classes: list[str]) -> dict:
    """Every answer collapsed to GROUP or not_GROUP, then scored like the classes (METHOD.md step 7)."""
    unknown = [m for m in members if m not in classes]
    if unknown:
        raise UsageError(f"binary group {group}: {', '.join(unknown)} not in the class table")
    inside, outside = group, f"not_{group}"

    def collapse(column: str):
        return F.when(F.col(column).isNull(), F.lit(None)).when(F.col(column).isin(members), inside).otherwise(outside)

    columns = [f"{v}_{m}" for v in view_names for m in methods] + ([label_col] if label_col else [])
    collapsed = df.select(*[collapse(c).alias(c) for c in columns])
    out: dict = {"classes": list(members)}
    for method in methods:
        entry = {}
        if len(view_names) == 2:
            entry = _scored(collapsed, f"{view_names[1]}_{method}", f"{view_names[0]}_{method}", [inside, outside])
        if label_col:
            entry["vs_label"] = {v: _scored(collapsed, label_col, f"{v}_{method}", [inside, outside]) for v in view_names}
        out[method] = entry
    return out
