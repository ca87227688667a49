"""The pyarrow reader of classify (spark/arrow_scan.py) gives the Spark reader's answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from pairspark import pipeline
from pairspark.config import View, load_settings
from pairspark.core.tournament import bracket_keys
from pairspark.errors import UsageError
from pairspark.pipeline.readers import arrow_scan
from pairspark.spark.arrow_scan import ArrowScan, eligibility, local_path
from tests.synthetic import make_catalog, write_bad_catalog

pytestmark = pytest.mark.pyspark35  # also run on pyspark 3.5 by scripts/test
VIEWS = [View("image", "image_embedding"), View("text", "text_embedding")]


def test_local_path_reads_every_spelling_of_a_file_uri():
    assert local_path("file:/tmp/a b/x.parquet") == "/tmp/a b/x.parquet"
    assert local_path("file:///tmp/a%20b/x.parquet") == "/tmp/a b/x.parquet"


def test_bracket_keys_are_the_jvms_xxhash64_of_the_id_as_a_string(spark):
    rng = np.random.default_rng(0)
    ids = ["", "a", "abcd", "é", "日本語のテキスト"] + ["".join(map(chr, rng.integers(32, 0x3000, size=n))) for n in range(70)]
    frame = spark.createDataFrame([(i,) for i in ids], "item_id string")
    for seed in (0, -3, 2**31 - 1, 2**31, -(2**40)):  # lit(seed) is an int, then a long
        want = [r[0] for r in frame.select(F.xxhash64(F.lit(seed), F.col("item_id"))).collect()]
        assert bracket_keys(pa.array(ids), seed).view(np.int64).tolist() == want, seed
    assert bracket_keys(pa.array(ids).slice(3, 9), 0).tolist() == bracket_keys(pa.array(ids[3:12]), 0).tolist()


def _classify(spark, items_path, model, out, reader, label_col=None):
    settings = load_settings(None, {"items_reader": reader, "arrow_batch_size": 7})
    info = pipeline.classify(spark, items_path, model, str(out), settings, label_col=label_col)
    predictions = pd.read_parquet(out).sort_values("item_id").reset_index(drop=True)
    quarantine = pd.read_parquet(f"{out}.quarantine")
    quarantine = quarantine.assign(item_id=quarantine["item_id"].astype(str)).sort_values(["item_id", "reason"])
    return info["counts"], predictions, quarantine.reset_index(drop=True)


def _same(a, b):
    assert a[0] == b[0]
    pd.testing.assert_frame_equal(a[1], b[1])
    assert a[2].columns.tolist() == b[2].columns.tolist()
    assert json.loads(a[2].to_json()) == json.loads(b[2].to_json())  # nested vectors, NaN and None alike


def test_the_bad_rows_get_the_same_reasons_and_the_quarantine_keeps_them_whole(spark, tmp_path):
    items_path, classes_path = write_bad_catalog(tmp_path / "bad")
    # several files and row groups: rows are found again by (file, row index)
    table = pq.read_table(items_path)
    folder = tmp_path / "split"
    folder.mkdir()
    pq.write_table(table.slice(0, 5), folder / "part-0.parquet", row_group_size=2)
    pq.write_table(table.slice(5), folder / "part-1.parquet", row_group_size=3)
    model = str(tmp_path / "model")
    pipeline.fit(spark, str(folder), classes_path, VIEWS, model, load_settings(None, {"min_margin": "0"}))
    arrow = _classify(spark, str(folder), model, tmp_path / "arrow", "arrow")
    _same(arrow, _classify(spark, str(folder), model, tmp_path / "spark", "spark"))
    assert arrow[0]["quarantined"] == 9 and arrow[1]["item_id"].tolist() == ["ok-1", "ok-2"]
    assert sorted(arrow[2]["reason"])[:2] == ["duplicate_item_id", "duplicate_item_id"]


def test_integer_ids_double_vectors_and_a_label_column_read_alike(spark, tmp_path):
    items, classes, _ = make_catalog(300, 12, 4, seed=3)
    table = pa.table({
        "item_id": pa.array(np.arange(300, dtype=np.int64) * 7 - 500),
        "label": pa.array(np.arange(300, dtype=np.int32) % 4),
        "image_embedding": pa.array(list(items["image_embedding"].astype(np.float64)), pa.list_(pa.float64())),
        "text_embedding": pa.array(list(items["text_embedding"]), pa.list_(pa.float32())),
        "note": pa.array([f"n{i}" for i in range(300)]),
    })
    folder = tmp_path / "items"
    folder.mkdir()
    pq.write_table(table, folder / "part-0.parquet", row_group_size=64)
    class_table = pa.table({"class_id": classes["class_id"],
                            **{c: pa.array(list(classes[c]), pa.list_(pa.float32())) for c in ("image_embedding", "text_embedding")}})
    pq.write_table(class_table, tmp_path / "classes.parquet")
    model = str(tmp_path / "model")
    pipeline.fit(spark, str(folder), str(tmp_path / "classes.parquet"), VIEWS, model, load_settings(None, {}))
    arrow = _classify(spark, str(folder), model, tmp_path / "arrow", "arrow", label_col="label")
    _same(arrow, _classify(spark, str(folder), model, tmp_path / "spark", "spark", label_col="label"))
    assert arrow[0]["classified"] == 300 and set(arrow[1]["label"]) == {"0", "1", "2", "3"}


def test_eligibility_says_why_a_source_cannot_be_read_by_pyarrow(spark, tmp_path):
    table = pa.table({"item_id": pa.array([1.5, 2.5]), "v": pa.array([[1.0, 0.0], [0.0, 1.0]], pa.list_(pa.float32())),
                      "w": pa.array(["x", "y"])})
    pq.write_table(table, tmp_path / "t.parquet")
    items = spark.read.parquet(str(tmp_path / "t.parquet"))
    assert "not a string or an integer" in eligibility(items, ["v"], ["item_id"])
    assert "not array<float|double>" in eligibility(items, ["w"], [])
    assert isinstance(eligibility(items, ["v"], []), ArrowScan)
    views = [View("v", "v")]
    forced = load_settings(None, {"items_reader": "arrow", "items_format": "json"})
    with pytest.raises(UsageError, match="--items-reader arrow cannot read these items: the items are not a Parquet path"):
        arrow_scan(items, str(tmp_path / "t.json"), views, None, forced)
    assert arrow_scan(items, str(tmp_path / "t.json"), views, None, load_settings(None, {"items_format": "json"})) is None
    assert arrow_scan(items, "table:t", views, None, load_settings(None, {})) is None
    assert arrow_scan(items, str(tmp_path / "t.parquet"), views, None, load_settings(None, {"partitions": 4})) is None
    assert arrow_scan(items, str(tmp_path / "t.parquet"), views, None, load_settings(None, {})) is None  # double ids


def test_the_sample_draw_outside_the_jvm_draws_the_jvm_rows(spark):
    from pairspark.spark.passes import DRAWN, FrameRows, drawn_mask

    ids = [f"item-{i}" for i in range(2000)] + ["", "é", "日本"]
    frame = spark.createDataFrame([(i,) for i in ids], "item_id string")
    for fraction, seed in ((0.1, 0), (0.37, -5), (0.9, 2**31 - 1), (1.0, 3)):
        jvm = FrameRows(frame).drawn(fraction, seed)
        want = set(jvm.column("item_id").to_pylist())
        mask = drawn_mask(pa.array(ids), fraction, seed)
        assert {i for i, m in zip(ids, mask) if m} == want, (fraction, seed)
        assert all(jvm.column(DRAWN).to_pylist())
    assert 150 < sum(drawn_mask(pa.array(ids), 0.1, 0)) < 250


def test_a_fit_read_by_pyarrow_equals_the_spark_readers_fit(spark, tmp_path, monkeypatch):
    """Two files in row groups of 64, a repeated id, a null vector and verified labels, the sample
    smaller than the items (so the draw and cotrain's full pass both read): the same counts and
    statistics (to rounding: sums per row group, not per Spark partition) and the same answers."""
    from pairspark.spark import passes

    monkeypatch.setattr(passes, "COTRAIN_SAMPLE", 150)
    items, classes, _ = make_catalog(400, 12, 4, seed=8)
    table = pa.table({"item_id": items["item_id"],
                      **{c: pa.array(list(items[c]), pa.list_(pa.float32())) for c in ("image_embedding", "text_embedding")}})
    bad = pa.table({"item_id": ["item-000003", "odd"],
                    "image_embedding": pa.array([list(items["image_embedding"][5]), None], pa.list_(pa.float32())),
                    "text_embedding": pa.array([list(items["text_embedding"][5])] * 2, pa.list_(pa.float32()))})
    folder = tmp_path / "items"
    folder.mkdir()
    pq.write_table(table.slice(0, 250), folder / "part-0.parquet", row_group_size=64)
    pq.write_table(pa.concat_tables([table.slice(250), bad]), folder / "part-1.parquet", row_group_size=64)
    class_table = pa.table({"class_id": classes["class_id"],
                            **{c: pa.array(list(classes[c]), pa.list_(pa.float32())) for c in ("image_embedding", "text_embedding")}})
    pq.write_table(class_table, tmp_path / "classes.parquet")
    pq.write_table(pa.table({"item_id": [f"item-{i:06d}" for i in range(0, 40, 4)], "label": ["c01"] * 10}),
                   tmp_path / "labels.parquet")
    fits = {}
    for reader in ("arrow", "spark"):
        settings = load_settings(None, {"items_reader": reader, "arrow_batch_size": 50, "labels": str(tmp_path / "labels.parquet")})
        model = tmp_path / f"model-{reader}"
        meta = pipeline.fit(spark, str(folder), str(tmp_path / "classes.parquet"), VIEWS, str(model), settings)
        fits[reader] = (meta, pd.read_parquet(model / "stats.parquet").sort_values(["view", "class_id"], ignore_index=True),
                        pd.read_parquet(model / "scorers.parquet"), _classify(spark, str(folder), str(model), tmp_path / f"p-{reader}", "spark"))
    (meta_a, stats_a, scorers_a, out_a), (meta_s, stats_s, scorers_s, out_s) = fits["arrow"], fits["spark"]
    assert meta_a["counts"] == meta_s["counts"] and meta_a["counts"]["valid_items"] == 399  # both rows of the repeated id and the null out
    assert meta_a["labels"] == meta_s["labels"] and (meta_a["reader"], meta_s["reader"]) == ("arrow", "spark")
    assert meta_a["method_fits"]["cotrain"]["sample_items"] == meta_s["method_fits"]["cotrain"]["sample_items"] < 399
    assert meta_a["method_fits"]["cotrain"]["passes"] == 1 and meta_a["reads"] == meta_s["reads"] == 2
    assert [v["confident_items"] for v in meta_a["views"]] == [v["confident_items"] for v in meta_s["views"]]
    assert stats_a["count"].tolist() == stats_s["count"].tolist()
    for column in ("sum", "m2"):
        np.testing.assert_allclose(np.stack(stats_a[column]), np.stack(stats_s[column]), rtol=1e-9, atol=1e-12)
    for column in ("weights", "bias"):
        np.testing.assert_allclose(np.stack(scorers_a[column]), np.stack(scorers_s[column]), rtol=1e-7, atol=1e-9)
    _same(out_a, out_s)
