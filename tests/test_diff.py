"""pairspark diff: the changes written, the lifetime of the join they come from, mismatched class tables."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
from pyspark.sql import functions as F

from pairspark import pipeline
from pairspark.errors import UsageError
from pairspark.pipeline.classify import PREDICTIONS_INFO
from pairspark.spark.audit import diff_predictions

SCHEMA = "item_id string, image_class string, text_class string"


def _predictions(spark, folder, rows, class_ids):
    spark.createDataFrame(rows, SCHEMA).coalesce(1).write.parquet(str(folder))
    info = {"views": ["image", "text"], "methods": ["base"], "class_ids": class_ids, "label_column": None}
    (folder / PREDICTIONS_INFO).write_text(json.dumps(info))
    return str(folder)


def test_diff_writes_the_changed_items_and_their_summary(spark, tmp_path):
    old = _predictions(spark, tmp_path / "old", [("i1", "a", "a"), ("i2", "b", "b"), ("i3", "c", "c")], ["a", "b", "c"])
    new = _predictions(spark, tmp_path / "new", [("i1", "a", "b"), ("i2", "c", "b"), ("i4", "a", "a")], ["a", "b", "c"])
    summary = pipeline.diff(spark, old, new, str(tmp_path / "out"))
    changes = pd.read_parquet(tmp_path / "out" / "changes").sort_values(["view", "item_id"])
    assert changes.values.tolist() == [["i2", "image", "b", "c"], ["i1", "text", "a", "b"]]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["by_pair"] == summary["by_pair"]
    assert {k: summary[k] for k in ("compared", "added", "removed", "changed")} == {
        "compared": 2, "added": 1, "removed": 1, "changed": {"image": 1, "text": 1}}


def test_the_changes_are_written_from_the_join_the_summary_counted(spark, tmp_path):
    """Old classes drawn anew at every evaluation: the written changes match the summary only if
    the write reads the persisted join, not a recomputation."""
    draw = F.udf(lambda _: random.choice("abcd"), "string").asNondeterministic()
    ids = spark.range(300).select(F.format_string("i%03d", "id").alias("item_id"))
    old = ids.select("item_id", draw("item_id").alias("image_class"), draw("item_id").alias("text_class"))
    new = ids.select("item_id", F.lit("a").alias("image_class"), F.lit("b").alias("text_class"))
    with diff_predictions(old, new, ["image", "text"]) as (changes, summary):
        changes.write.parquet(str(tmp_path / "changes"))
    written = pd.read_parquet(tmp_path / "changes")
    by_pair = written.groupby(["view", "old_class", "new_class"]).size()
    assert {(p["view"], p["old_class"], p["new_class"]): p["count"] for p in summary["by_pair"]} == by_pair.to_dict()
    assert summary["changed"] == written["view"].value_counts().to_dict()


def test_diff_refuses_predictions_of_different_class_tables(spark, tmp_path):
    rows = [("i1", "a", "a"), ("i2", "b", "b")]
    old = _predictions(spark, tmp_path / "old", rows, ["a", "b", "c", "d"])
    new = _predictions(spark, tmp_path / "new", rows, ["a", "b", "x"])
    with pytest.raises(UsageError) as error:
        pipeline.diff(spark, old, new, str(tmp_path / "out"))
    message = str(error.value)
    assert "\n" not in message
    assert "only in the old 2 (c, d)" in message and "only in the new 1 (x)" in message
    assert not (tmp_path / "out").exists()
