"""evaluate_predictions: every count from one Spark aggregation, metrics unchanged."""

from __future__ import annotations

import uuid

import pytest

from pairspark.spark.evaluate import confusion_from_spark, evaluate_predictions

CLASSES = ["a", "b", "c"]
METHODS = ["base", "pairwise", "cotrain"]
ROWS = [  # item_id, label, then image_/text_ base, pairwise, cotrain; "z" is outside the class table
    ("i1", "a", "a", "a", "b", "a", "a", "a"),
    ("i2", "b", "b", "c", "b", "a", None, "b"),
    ("i3", None, "c", "z", "c", "c", "b", "a"),
]


def _predictions(spark):
    columns = ["item_id", "label"] + [f"{v}_{m}" for v in ("image", "text") for m in METHODS]
    return spark.createDataFrame(ROWS, ", ".join(f"{c} string" for c in columns))


def _jobs(spark, run) -> int:
    sc = spark.sparkContext
    group = f"evaluate-{uuid.uuid4()}"
    sc.setJobGroup(group, "count evaluate's jobs")
    try:
        run()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    return len(sc.statusTracker().getJobIdsForGroup(group))


def test_evaluate_runs_a_constant_small_number_of_spark_jobs(spark):
    df = _predictions(spark)
    binary = {"low": ["a", "b"]}
    one = _jobs(spark, lambda: evaluate_predictions(df, ["image", "text"], METHODS[:1], CLASSES, "label", binary))
    three = _jobs(spark, lambda: evaluate_predictions(df, ["image", "text"], METHODS, CLASSES, "label", binary))
    single_view = _jobs(spark, lambda: evaluate_predictions(df, ["image"], METHODS, CLASSES))
    assert 1 <= one == three <= 2 and single_view <= 2, (one, three, single_view)


def test_every_metric_equals_its_own_grouped_count(spark):
    df = _predictions(spark)
    report = evaluate_predictions(df, ["image", "text"], METHODS, CLASSES, "label", {"low": ["a", "b"]})
    assert report["counts"] == {"items": 3, "labelled": 2}

    def expected(frame, reference, predicted, classes):
        confusion, order, missing = confusion_from_spark(frame, reference, predicted, classes)
        return confusion.tolist(), order, missing

    def got(m):
        return m["confusion"], m["classes"], m["rows_skipped_null"]

    for m in METHODS:
        assert got(report["agreement"][m]) == expected(df, f"text_{m}", f"image_{m}", CLASSES)
        for v in ("image", "text"):
            assert got(report["vs_label"][v][m]) == expected(df, "label", f"{v}_{m}", CLASSES)
            column = [r[f"{v}_{m}"] for r in df.collect()]
            assert report["class_counts"][v][m] == {c: column.count(c) for c in set(column) if c is not None}
    assert report["agreement"]["pairwise"]["classes"] == CLASSES + ["z"]  # outside the table: appended
    assert report["vs_label"]["text"]["base"]["accuracy"] == pytest.approx(1 / 2)  # i1 a=a, i2 b!=a
    assert report["vs_label"]["text"]["pairwise"]["rows_skipped_null"] == 2  # i2's null answer, i3's null label
    low = report["binary"]["low"]["base"]
    # image_base a,b,c -> low,low,not_low; text_base b,b,c -> low,low,not_low: full agreement
    assert low["confusion"] == [[2, 0], [0, 1]] and low["classes"] == ["low", "not_low"]
    assert low["vs_label"]["image"]["confusion"] == [[2, 0], [0, 0]] and low["vs_label"]["image"]["rows_skipped_null"] == 1


def test_one_view_without_label_counts_classes_only(spark):
    report = evaluate_predictions(_predictions(spark), ["text"], ["pairwise"], CLASSES)
    assert report["counts"] == {"items": 3}
    assert report["class_counts"] == {"text": {"pairwise": {"a": 1, "b": 1}}}
    assert "agreement" not in report and "vs_label" not in report


@pytest.mark.parametrize("views, label, labelled, says", [
    (["image"], None, None, "No comparison was possible: the predictions have 1 view (image), not two to compare, "
                            "and there is no label column; an audit needs two views or labels."),
    (["image"], "label", 0, "No comparison was possible: the predictions have 1 view (image), not two to compare, "
                            "and the label column label has no labelled item;"),
    (["image"], "label", 5, "None: image matches the label (label) on every labelled item; no two views were compared"),
    (["image", "text"], None, None, "None: the views image and text agree with each other on every item; "
                                    "there is no label column, so no label was compared."),
    (["image", "text"], "label", 5, "None: the views image and text agree with each other on every item, "
                                    "and with the label (label) on every labelled item."),
])
def test_the_report_says_what_was_compared_when_nothing_is_suspect(views, label, labelled, says):
    from pairspark.report import render_report

    report = {"views": views, "methods": ["base"], "primary_method": "base", "counts": {"items": 5}}
    if label:
        report["label_column"], report["counts"]["labelled"] = label, labelled
    page = render_report(report, [], {})
    assert says in page
    assert ("agree with each other" in page) == (len(views) == 2)
