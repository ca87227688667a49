"""Verified labels (--labels / labelsPath): reading, errors, training, predictions and metrics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pairspark import pipeline
from pairspark.config import View, load_settings
from pairspark.errors import UsageError
from pairspark.spark.io import read_labels
from tests.synthetic import make_catalog, write_catalog

pytestmark = pytest.mark.pyspark35  # also run on pyspark 3.5 by scripts/test
VIEWS = [View("image", "image_embedding"), View("text", "text_embedding")]
CLASSES = ["a", "b", "c"]


def _write(tmp_path, name, rows):
    frame = pd.DataFrame(rows, columns=["item_id", "label"])
    path = tmp_path / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return str(path)


def test_labels_read_alike_from_parquet_and_csv_with_a_class_index_and_repeats_merged(spark, tmp_path):
    rows = [("i1", "b"), ("i2", "a"), ("i2", "a")]
    for name in ("l.parquet", "l.csv"):
        table = read_labels(spark, _write(tmp_path, name, rows), CLASSES)
        got = sorted(zip(table.column("item_id").to_pylist(), table.column("label").to_pylist(), table.column("class_index").to_pylist()))
        assert got == [("i1", "b", 1), ("i2", "a", 0)]


@pytest.mark.parametrize("rows, message", [
    ([("i1", "b"), ("i2", "shoes")], "1 label(s) that are not a class_id of the classes table: 'shoes'"),
    ([("i1", "b"), ("i1", "c")], "1 item(s) labelled with two classes, e.g. item_id='i1'"),
    ([("i1", None)], "1 row(s) with a null item_id or label"),
])
def test_a_bad_labels_file_is_a_one_line_usage_error(spark, tmp_path, rows, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_labels(spark, _write(tmp_path, "bad.parquet", rows), CLASSES)


def test_a_labels_file_without_the_columns_is_a_usage_error(spark, tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"id": ["i1"], "label": ["a"]}), path)
    with pytest.raises(UsageError, match="has no column"):
        read_labels(spark, str(path), CLASSES)


@pytest.fixture(scope="module")
def misled(tmp_path_factory):
    """Both views' prompt of c01 sits on c02's items: without labels nothing learns c01."""
    items, classes, truth = make_catalog(600, 12, 4, seed=5, noise=0.8)
    for column in ("image_embedding", "text_embedding"):
        classes[column][1] = classes[column][2] + 0.05
    folder = tmp_path_factory.mktemp("misled")
    items_path, classes_path = write_catalog(folder, items, classes)
    rng = np.random.default_rng(0)
    picked = np.concatenate([rng.choice(np.flatnonzero(truth == c), 5, replace=False) for c in range(4)])
    rows = [(items["item_id"][i], f"c{truth[i]:02d}") for i in picked] + [("not-an-item", "c00")]
    labels = _write(folder, "labels.csv", rows)
    return items_path, classes_path, labels, truth, {items["item_id"][i] for i in picked}, folder


def test_verified_labels_teach_cotrain_a_class_its_prompt_misses(spark, misled):
    items_path, classes_path, labels, truth, labelled, folder = misled
    without = pipeline.run(spark, items_path, classes_path, VIEWS, str(folder / "without"), load_settings(None, {}), "label")
    settings = load_settings(None, {"labels": labels})
    report = pipeline.run(spark, items_path, classes_path, VIEWS, str(folder / "with"), settings, "label")
    meta = json.loads((folder / "with" / "model" / "meta.json").read_text())
    assert meta["labels"]["given"] == 21 and meta["labels"]["matched"] == 20 and meta["labels"]["not_among_items"] == 1
    assert meta["method_fits"]["cotrain"]["converged"] is True
    for view in ("image", "text"):
        assert report["vs_label"][view]["cotrain"]["accuracy"] > without["vs_label"][view]["cotrain"]["accuracy"] + 0.1
    predictions = pd.read_parquet(folder / "with" / "predictions")
    verified = predictions.dropna(subset=["verified_label"])
    assert set(verified["item_id"]) == labelled
    assert (verified["verified_label"] == verified["label"]).all()
    # the metrics are over the other 580 items, and say so
    assert report["counts"]["verified_excluded"] == 20 and report["counts"]["labelled"] == 580
    assert "verified label" in (folder / "with" / "report" / "report.html").read_text()
    assert "verified_label" not in pd.read_parquet(folder / "without" / "predictions").columns
