"""The review queue (spark/review.py) and the calibration metrics evaluate writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import types as T

from pairspark import pipeline
from pairspark.config import View, load_settings
from pairspark.core import calibration as cal
from pairspark.spark.evaluate import calibration_metrics
from pairspark.spark.review import csv_frame, review_items
from tests.synthetic import make_catalog, write_catalog

pytestmark = pytest.mark.pyspark35  # also run on pyspark 3.5 by scripts/test

TOP = T.ArrayType(T.StructType([T.StructField("class_id", T.StringType()), T.StructField("score", T.FloatType())]))
SCHEMA = T.StructType([T.StructField("item_id", T.StringType()), T.StructField("label", T.StringType())]
                      + [f for v in ("a", "b") for f in (T.StructField(f"{v}_class", T.StringType()),
                                                           T.StructField(f"{v}_confidence", T.FloatType()),
                                                           T.StructField(f"{v}_top", TOP))])


def _rows(spark, rows):
    return spark.createDataFrame([(i, lab, ca, pa_, [(ca, pa_)], cb, pb, [(cb, pb)]) for i, lab, ca, pa_, cb, pb in rows], SCHEMA)


def test_the_queue_holds_exactly_the_rules_items_ranked_by_the_chance_a_look_changes_something(spark):
    df = _rows(spark, [
        ("ok", "x", "x", 0.95, "x", 0.9),        # agree, confident, label agrees: not queued
        ("low", "x", "x", 0.5, "x", 0.99),       # the first view below 0.9
        ("split", "x", "x", 0.97, "y", 0.8),     # views disagree (the label matches one)
        ("wrong", "z", "x", 0.99, "x", 0.99),    # the label contradicts both views
        ("nolabel", None, "y", 0.6, "x", 0.9),   # disagree and low, no label
    ])
    got = review_items(df, ["a", "b"], "label", 0.9).toPandas()
    assert got["item_id"].tolist() == ["wrong", "low", "nolabel", "split"]
    assert [list(r) for r in got["reasons"]] == [["label_contradicts_views"], ["low_confidence"],
                                                ["views_disagree", "low_confidence"], ["views_disagree"]]
    np.testing.assert_allclose(got["change_probability"], [1.0, 0.5, 0.4, 0.03], atol=1e-6)
    one_view = review_items(df, ["a"], None, 0.9).toPandas()
    assert sorted(one_view["item_id"]) == ["low", "nolabel"]
    text = csv_frame(review_items(df, ["a", "b"], "label", 0.9)).toPandas()
    assert text.loc[text["item_id"] == "nolabel", "reasons"].item() == "views_disagree;low_confidence"
    assert text.loc[text["item_id"] == "nolabel", "a_top"].item() == "y:0.6000"


def test_calibration_metrics_equal_the_numpy_definitions(spark):
    rng = np.random.default_rng(2)
    n = 300
    conf = rng.random(n).astype(np.float32)
    label = rng.choice(["x", "y"], n)
    cls = np.where(rng.random(n) < conf, label, np.where(label == "x", "y", "x"))
    rows = [(f"i{i}", str(label[i]), str(cls[i]), float(conf[i]), [], str(cls[i]), float(conf[i]), []) for i in range(n)]
    rows.append(("nulllabel", None, "x", 0.3, [], "x", 0.3, []))
    got = calibration_metrics(spark.createDataFrame(rows, SCHEMA), ["a", "b"], "label")
    right = cls == label
    table = cal.reliability(conf.astype(np.float64), right)
    assert got["calibration"]["a"]["reliability"]["items"] == table["items"]
    assert got["calibration"]["a"]["ece"] == pytest.approx(cal.expected_calibration_error(table), rel=1e-9)
    want = cal.selective(conf.astype(np.float64), right)
    for t, entry in want.items():
        assert got["selective"]["a"][t]["items"] == entry["items"]
        assert got["selective"]["a"][t]["accuracy"] == pytest.approx(entry["accuracy"])
        assert got["selective"]["a"][t]["coverage"] == pytest.approx(entry["coverage"])
    assert got["confidence"]["b"]["items"] == n  # the label metrics leave the null label out, so does the histogram
    assert "calibration" not in calibration_metrics(spark.createDataFrame(rows, SCHEMA), ["a", "b"], None)


def test_a_run_publishes_the_review_queue_and_counts_it_in_the_metrics(spark, tmp_path):
    items, classes, _ = make_catalog(200, 8, 3, seed=8, noise=1.5)
    items["title"] = [f"title of {i}" for i in items["item_id"]]
    items_path, classes_path = write_catalog(tmp_path / "data", items, classes)
    views = [View("image", "image_embedding"), View("text", "text_embedding")]
    report = pipeline.run(spark, items_path, classes_path, views, str(tmp_path / "out"), load_settings(None, {"review_below": 0.95}),
                          label_col="label", show_cols=["title"])
    queue = pd.read_parquet(tmp_path / "out" / "review" / "items")
    assert (queue["title"] == "title of " + queue["item_id"]).all()  # --show-cols, joined by item_id
    ranked = queue.sort_values(["change_probability", "item_id"], ascending=[False, True], kind="stable")
    assert queue["item_id"].tolist() == ranked["item_id"].tolist()
    assert report["review"]["items"] == len(queue) > 0 and report["review"]["below"] == 0.95
    pred = pd.read_parquet(tmp_path / "out" / "predictions")
    want = pred[(pred["image_confidence"] < 0.95) | (pred["image_class"] != pred["text_class"])
                | ((pred["label"] != pred["image_class"]) & (pred["label"] != pred["text_class"]))]
    assert sorted(queue["item_id"]) == sorted(want["item_id"])
    assert (tmp_path / "out" / "review" / "review.csv").exists()
    assert (tmp_path / "out" / "report" / "reliability_image.png").exists()
    assert set(report["calibration"]) == {"image", "text"}
