"""The Spark stages against numpy references on synthetic catalogs."""

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
from pairspark.spark.publish import atomic_output
from tests.synthetic import make_catalog, write_bad_catalog, write_catalog

pytestmark = pytest.mark.pyspark35  # also run on pyspark 3.5 by scripts/test
VIEWS = [View("image", "image_embedding"), View("text", "text_embedding")]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    items, classes, truth = make_catalog(600, 16, 5, seed=11)
    # class c04 gets no item at all: an empty class must still be handled
    keep = truth != 4
    items = {k: (v[keep] if isinstance(v, np.ndarray) else [x for x, m in zip(v, keep) if m]) for k, v in items.items()}
    for column in ("image_embedding", "text_embedding"):  # and its prompt points away from every item
        classes[column][4] = -items[column].mean(axis=0)
    paths = write_catalog(tmp_path_factory.mktemp("catalog"), items, classes)
    return paths, items, classes


def numpy_moments(x, class_vectors):
    """Float64 reference: unit rows, cosine argmax, per-class count, mean and population variance."""
    x = x.astype(np.float64)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    t = class_vectors.astype(np.float64)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    best = np.argmax(unit @ t.T, axis=1)
    out = {}
    for c in range(len(t)):
        rows = unit[best == c]
        out[c] = (len(rows), rows.mean(axis=0) if len(rows) else None, rows.var(axis=0) if len(rows) else None)
    return out


@pytest.mark.parametrize("partitions", [1, 3, 8])
def test_spark_stats_equal_numpy_stats_for_any_partitioning(spark, catalog, tmp_path, partitions):
    (items_path, classes_path), items, classes = catalog
    settings = load_settings(None, {"min_margin": "0", "min_cosine": -1, "partitions": partitions})
    meta = pipeline.fit(spark, items_path, classes_path, VIEWS, str(tmp_path / "model"), settings)
    stats = pd.read_parquet(tmp_path / "model" / "stats.parquet")
    assert meta["counts"]["valid_items"] == len(items["item_id"])
    for view in VIEWS:
        reference = numpy_moments(items[view.column], classes[view.column])
        rows = stats[stats["view"] == view.name].set_index("class_id")
        for c, (count, mean, var) in reference.items():
            row = rows.loc[f"c{c:02d}"]
            assert row["count"] == count
            if count:
                np.testing.assert_allclose(np.asarray(row["sum"]) / count, mean, rtol=1e-5, atol=1e-7)
                np.testing.assert_allclose(np.asarray(row["m2"]) / count, var, rtol=1e-4, atol=1e-8)
                sumsq = np.asarray(row["sumsq"])
                np.testing.assert_allclose(sumsq / count, var + mean**2, rtol=1e-5, atol=1e-7)
    assert rows.loc["c04", "count"] == 0  # the empty class is present, with zeros
    masks = pd.read_parquet(tmp_path / "model" / "masks.parquet")
    assert len(masks) == 2 * 10  # two views, C(5, 2) pairs each
    assert (masks["class_a"] < masks["class_b"]).all()
    empty_pairs = masks[(masks["class_b"] == "c04")]
    assert all(list(d) == list(range(16)) for d in empty_pairs["dims"])  # empty class: all dims
    assert all(list(d) == sorted(d) and len(d) >= 8 for d in masks["dims"])


def test_moments_riding_on_cotrain_final_pass_equal_their_own_pass(spark, catalog, tmp_path, monkeypatch):
    """With a sample smaller than the items, cotrain makes one pass over all of them and the
    confident moments ride on it: the same statistics, to the bit, as a fit whose moments take
    their own pass (no iterative method)."""
    from pairspark.spark import passes

    monkeypatch.setattr(passes, "COTRAIN_SAMPLE", 150)
    (items_path, classes_path), items, _ = catalog
    models = {}
    for methods in ("base,pairwise,cotrain", "base,pairwise"):
        settings = load_settings(None, {"methods": methods, "partitions": 3})
        models[methods] = pipeline.fit(spark, items_path, classes_path, VIEWS, str(tmp_path / methods), settings)
    riding, alone = models["base,pairwise,cotrain"], models["base,pairwise"]
    assert riding["method_fits"]["cotrain"]["passes"] == 1
    assert riding["method_fits"]["cotrain"]["sample_items"] < len(items["item_id"])
    assert riding["counts"] == alone["counts"] == {"valid_items": len(items["item_id"])}
    assert [v["min_margin_used"] for v in riding["views"]] == [v["min_margin_used"] for v in alone["views"]]
    for table in ("stats.parquet", "masks.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "base,pairwise,cotrain" / table),
                                      pd.read_parquet(tmp_path / "base,pairwise" / table))


def _with_null_rows(items_path: str, folder, count: int) -> str:
    """The items plus `count` rows whose image vector is null (invalid; the catalog is 16-d), in one
    new file."""
    good = pq.read_table(items_path)
    values = {"item_id": [f"bad-{i}" for i in range(count)], "image_embedding": [None] * count,
              "text_embedding": [[0.1] * 16] * count}
    bad = pa.table({name: pa.array(values.get(name, [None] * count), good.schema.field(name).type)
                    for name in good.column_names})
    folder.mkdir()
    pq.write_table(pa.concat_tables([good, bad.cast(good.schema)]), folder / "items.parquet")
    return str(folder / "items.parquet")


def test_mostly_invalid_rows_still_give_a_sample_of_every_valid_item(spark, catalog, tmp_path, monkeypatch):
    """1,800 rows of which 600 valid, COTRAIN_SAMPLE 700: the first draw (700 / 1,800 of the rows)
    holds about 230 valid items, so the sample is drawn again, and is every valid item."""
    from pairspark.spark import passes

    monkeypatch.setattr(passes, "COTRAIN_SAMPLE", 700)
    (_, classes_path), items, _ = catalog
    items_path = _with_null_rows(catalog[0][0], tmp_path / "items", 1200)
    meta = pipeline.fit(spark, items_path, classes_path, VIEWS, str(tmp_path / "m"), load_settings(None, {}))
    assert meta["counts"]["valid_items"] == len(items["item_id"])
    assert meta["method_fits"]["cotrain"]["sample_items"] == len(items["item_id"])
    assert meta["method_fits"]["cotrain"]["passes"] == 0  # the sample is every valid item


def test_no_valid_row_among_more_rows_than_the_sample_is_a_usage_error(spark, catalog, tmp_path, monkeypatch):
    from pairspark.spark import passes

    monkeypatch.setattr(passes, "COTRAIN_SAMPLE", 5)
    (_, classes_path), _, _ = catalog
    good = pq.read_table(catalog[0][0]).slice(0, 0)
    folder = tmp_path / "none"
    items_path = _with_null_rows(_write(good, tmp_path / "empty.parquet"), folder, 40)
    with pytest.raises(UsageError, match="no valid rows"):
        pipeline.fit(spark, items_path, classes_path, VIEWS, str(tmp_path / "m"), load_settings(None, {}))


def _write(table: pa.Table, path) -> str:
    pq.write_table(table, path)
    return str(path)


def test_quantile_margin_keeps_about_the_rest(spark, catalog, tmp_path):
    (items_path, classes_path), items, _ = catalog
    meta = pipeline.fit(spark, items_path, classes_path, VIEWS, str(tmp_path / "m"), load_settings(None, {"min_margin": "30%"}))
    for view in meta["views"]:
        share = view["confident_items"] / len(items["item_id"])
        assert 0.68 <= share <= 0.72, share
        assert view["min_margin_used"] > 0


def _part_file_digests(folder):
    """sha256 of each Parquet part file, in part-number order (file names carry a random id)."""
    import hashlib

    parts = sorted(folder.glob("part-*.parquet"), key=lambda p: p.name.split("-")[1])
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in parts]


def test_predictions_are_byte_identical_whatever_the_partitioning_and_row_order(spark, catalog, tmp_path):
    (items_path, classes_path), items, _ = catalog
    shuffled_path = tmp_path / "shuffled.parquet"
    table = pq.read_table(items_path)
    pq.write_table(table.take(np.random.default_rng(0).permutation(table.num_rows)), shuffled_path, row_group_size=97)
    digests = []
    for path, partitions in ((items_path, 1), (items_path, 4), (items_path, 16), (str(shuffled_path), 3)):
        settings = load_settings(None, {"partitions": partitions, "seed": 5, "arrow_batch_size": 64})
        out = tmp_path / f"run{partitions}"
        pipeline.run(spark, path, classes_path, VIEWS, str(out), settings, label_col="label")
        digests.append(_part_file_digests(out / "predictions"))
    assert len(digests[0]) == 4 and all(d == digests[0] for d in digests[1:])
    # another seed reshuffles the brackets but never the base answers
    pipeline.run(spark, items_path, classes_path, VIEWS, str(tmp_path / "seed6"), load_settings(None, {"seed": 6}))
    a = pd.read_parquet(tmp_path / "run1" / "predictions").sort_values("item_id").reset_index(drop=True)
    b = pd.read_parquet(tmp_path / "seed6" / "predictions").sort_values("item_id").reset_index(drop=True)
    assert (a["image_base"] == b["image_base"]).all() and (a["text_base"] == b["text_base"]).all()


def test_base_predictions_equal_numpy_cosine_argmax(spark, catalog, tmp_path):
    (items_path, classes_path), items, classes = catalog
    pipeline.run(spark, items_path, classes_path, VIEWS, str(tmp_path / "r"), load_settings(None, {"methods": "base"}))
    pred = pd.read_parquet(tmp_path / "r" / "predictions").set_index("item_id").loc[items["item_id"]]
    for view in VIEWS:
        x = items[view.column].astype(np.float64)
        t = classes[view.column].astype(np.float64)
        cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (t / np.linalg.norm(t, axis=1, keepdims=True)).T
        expected = [f"c{i:02d}" for i in cos.argmax(axis=1)]
        assert pred[f"{view.name}_base"].tolist() == expected
        assert pred[f"{view.name}_class"].tolist() == expected  # base is primary when pairwise is off
        np.testing.assert_allclose(pred[f"{view.name}_base_cosine"], cos.max(axis=1), atol=1e-5)
        assert f"{view.name}_pairwise" not in pred.columns


def test_bad_rows_are_quarantined_with_a_reason_and_every_row_is_counted(spark, tmp_path):
    items_path, classes_path = write_bad_catalog(tmp_path / "bad")
    report = pipeline.run(spark, items_path, classes_path, VIEWS, str(tmp_path / "out"), load_settings(None, {"min_margin": "0"}))
    quarantine = pd.read_parquet(tmp_path / "out" / "quarantine")
    reasons = dict(zip(quarantine["item_id"].fillna("<null>"), quarantine["reason"]))
    assert reasons == {
        "null-vec": "image:null_vector",
        "short": "image:wrong_length:3!=4",
        "nan": "image:non_finite",
        "inf": "text:non_finite",
        "null-elem": "image:null_element",
        "zero": "text:zero_vector",
        "<null>": "null_item_id",
        "twice": "duplicate_item_id",
    }
    assert (quarantine["item_id"] == "twice").sum() == 2  # neither copy is kept
    assert set(quarantine.columns) >= {"item_id", "image_embedding", "text_embedding", "reason"}
    counts = report["counts"]
    assert counts["items"] == counts["classified"] == 2 and counts["quarantined"] == 9 and counts["items_in"] == 11
    assert counts["quarantined_by_reason"]["image:non_finite"] == 1
    assert sorted(pd.read_parquet(tmp_path / "out" / "predictions")["item_id"]) == ["ok-1", "ok-2"]
    success = json.loads((tmp_path / "out" / "quarantine" / "_SUCCESS").read_text())
    assert success["counts"]["quarantined"] == 9


def test_on_invalid_error_stops_naming_the_first_bad_rows(spark, tmp_path):
    from pairspark.errors import InvalidRowsError

    items_path, classes_path = write_bad_catalog(tmp_path / "bad")
    settings = load_settings(None, {"on_invalid": "error"})
    # the first three by item_id (nulls first), whatever the file order
    first = r"first: item_id=None \(null_item_id\), item_id='inf' \(text:non_finite\), item_id='nan' \(image:non_finite\);"
    with pytest.raises(InvalidRowsError, match=first):
        pipeline.fit(spark, items_path, classes_path, VIEWS, str(tmp_path / "m"), settings)
    assert not (tmp_path / "m").exists()
    # classify finds them in its own pass, and publishes nothing either
    pipeline.fit(spark, items_path, classes_path, VIEWS, str(tmp_path / "m"), load_settings(None, {"min_margin": "0"}))
    with pytest.raises(InvalidRowsError, match=first):
        pipeline.classify(spark, items_path, str(tmp_path / "m"), str(tmp_path / "p"), settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "m"]


def test_input_problems_are_usage_errors(spark, catalog, tmp_path):
    (items_path, classes_path), _, _ = catalog
    settings = load_settings()
    with pytest.raises(UsageError, match="cannot read items"):
        pipeline.fit(spark, str(tmp_path / "nope.parquet"), classes_path, VIEWS, str(tmp_path / "m"), settings)
    with pytest.raises(UsageError, match="no column"):
        pipeline.fit(spark, items_path, classes_path, [View("image", "missing_col")], str(tmp_path / "m"), settings)
    with pytest.raises(UsageError, match="classes table has no column 'colour'"):
        pipeline.fit(spark, items_path, classes_path, [View("colour", "colour_embedding")], str(tmp_path / "m"), settings)
    small = tmp_path / "c3.parquet"
    pq.write_table(pa.table({"class_id": ["a", "b"], "image_embedding": pa.array([[1.0, 0, 0], [0, 1.0, 0]], pa.list_(pa.float32()))}), small)
    with pytest.raises(UsageError, match="16-d vectors but the classes' vectors are 3-d"):
        pipeline.fit(spark, items_path, str(small), [View("image", "image_embedding")], str(tmp_path / "m"), settings)
    dup = tmp_path / "dup.parquet"  # two prompt rows of one class are still one class
    pq.write_table(pa.table({"class_id": ["a", "a"], "image_embedding": pa.array([[1.0, 0, 0], [0, 1.0, 0]], pa.list_(pa.float32()))}), dup)
    with pytest.raises(UsageError, match="has 1 class"):
        pipeline.fit(spark, items_path, str(dup), [View("image", "image_embedding")], str(tmp_path / "m"), settings)
    opposite = tmp_path / "opposite.parquet"
    pq.write_table(pa.table({"class_id": ["a", "b", "a"],
                             "image_embedding": pa.array([[1.0, 0, 0], [0, 1.0, 0], [-2.0, 0, 0]], pa.list_(pa.float32()))}), opposite)
    with pytest.raises(UsageError, match="prompts of class a cancel out"):
        pipeline.fit(spark, items_path, str(opposite), [View("image", "image_embedding")], str(tmp_path / "m"), settings)
    one = tmp_path / "one.parquet"
    pq.write_table(pa.table({"class_id": ["a"], "image_embedding": pa.array([[1.0] * 16], pa.list_(pa.float32()))}), one)
    with pytest.raises(UsageError, match="at least 2 are needed"):
        pipeline.fit(spark, items_path, str(one), [View("image", "image_embedding")], str(tmp_path / "m"), settings)
    empty = tmp_path / "empty.parquet"
    pq.write_table(pq.read_table(items_path).slice(0, 0), empty)
    with pytest.raises(UsageError, match="has no rows"):
        pipeline.fit(spark, str(empty), classes_path, VIEWS, str(tmp_path / "m"), settings)


def test_a_failed_write_leaves_the_previous_output_in_place(spark, tmp_path):
    final = str(tmp_path / "out")
    with atomic_output(spark, final) as staging:
        spark.range(3).write.parquet(staging)
    with pytest.raises(RuntimeError):
        with atomic_output(spark, final) as staging:
            spark.range(10).write.parquet(staging)
            raise RuntimeError("killed half way")
    assert spark.read.parquet(final).count() == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # staging cleaned up
    # a run that died between the two renames: the old copy is restored by the next one
    (tmp_path / "out").rename(tmp_path / "out.old-deadbeef")
    with atomic_output(spark, final) as staging:
        assert spark.read.parquet(final).count() == 3
        spark.range(4).write.parquet(staging)
    assert spark.read.parquet(final).count() == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_model_round_trips_and_meta_records_the_run(spark, catalog, tmp_path):
    (items_path, classes_path), _, _ = catalog
    from pairspark.spark.model_io import load_model

    settings = load_settings(None, {"ratio_threshold": 1.1, "max_dims": 12})
    pipeline.fit(spark, items_path, classes_path, VIEWS, str(tmp_path / "m"), settings)
    views, metadata = load_model(spark, str(tmp_path / "m"))
    meta = metadata["pairspark"]
    assert meta == json.loads((tmp_path / "m" / "meta.json").read_text())
    assert [v.name for v in views] == ["image", "text"]
    assert meta["settings"]["ratio_threshold"] == 1.1 and meta["settings"]["max_dims"] == 12
    assert meta["views"][0]["class_ids"] == [f"c{i:02d}" for i in range(5)]
    assert set(meta["versions"]) >= {"pyspark", "numpy", "pyarrow", "python"}
    for v in views:
        for (a, b), dims in zip(v.pairs().tolist(), v.masks):
            # the empty class c04 has no statistics: its pairs compare on all 16 dims, uncapped
            assert len(dims) == 16 if 4 in (a, b) else 8 <= len(dims) <= 12
    assert json.loads(json.dumps(meta)) == meta


@pytest.mark.parametrize(
    "ids, vectors, message",
    [
        (["a", None], [[1.0, 0, 0], [0, 1.0, 0]], "null class_id"),
        (["a", "b"], [[1.0, 0, 0], None], "null or empty for class b"),
        (["a", "b"], [[1.0, 0, 0], [0, 1.0]], r"different lengths \[2, 3\]"),
        (["a", "b"], [[1.0, 0, 0], [0, float("nan"), 1.0]], "NaN, infinity or null"),
        (["a", "b"], [[1.0, 0, 0], [0, None, 1.0]], "NaN, infinity or null"),
        (["a", "b"], [[1.0, 0, 0], [0.0, 0, 0]], "zero vector for class b"),
    ],
)
def test_a_broken_classes_table_is_a_usage_error(spark, tmp_path, ids, vectors, message):
    from pairspark.spark.io import load_classes

    path = tmp_path / "classes.parquet"
    pq.write_table(pa.table({"class_id": ids, "image_embedding": pa.array(vectors, pa.list_(pa.float32()))}), path)
    with pytest.raises(UsageError, match=message):
        load_classes(spark, str(path), [View("image", "image_embedding")])


def test_masks_in_bit_form_give_the_same_model_files_and_predictions(spark, catalog, tmp_path, monkeypatch):
    from pairspark.core import masks as masks_module

    (items_path, classes_path), _, _ = catalog
    settings = load_settings(None, {"min_margin": "0"})
    pipeline.run(spark, items_path, classes_path, VIEWS, str(tmp_path / "csr"), settings)
    monkeypatch.setattr(masks_module, "CSR_LIMIT_BYTES", 0)  # decided on the driver, broadcast as is
    pipeline.run(spark, items_path, classes_path, VIEWS, str(tmp_path / "bits"), settings)
    from pairspark.spark.model_io import load_model

    views, _ = load_model(spark, str(tmp_path / "bits" / "model"))
    assert all(v.masks.is_bits for v in views)
    for name in ("masks.parquet", "predictions"):
        a = pd.read_parquet(tmp_path / "csr" / ("model" if name.endswith("parquet") else "") / name)
        b = pd.read_parquet(tmp_path / "bits" / ("model" if name.endswith("parquet") else "") / name)
        sort = ["view", "class_a", "class_b"] if name == "masks.parquet" else ["item_id"]
        a, b = a.sort_values(sort).reset_index(drop=True), b.sort_values(sort).reset_index(drop=True)
        assert a.drop(columns="dims", errors="ignore").equals(b.drop(columns="dims", errors="ignore"))
        if "dims" in a:
            assert all(np.array_equal(x, y) for x, y in zip(a["dims"], b["dims"]))


def test_a_class_with_several_prompt_rows_gets_their_unit_mean_and_one_row_stays_exact(spark, tmp_path):
    from pairspark.spark.io import load_classes

    path = tmp_path / "prompts.parquet"
    vectors = [[0.0, 0.0, 2.0], [3.0, 0.0, 0.0], [0.3, 0.1, 0.7], [0.0, 4.0, 0.0]]
    pq.write_table(pa.table({"class_id": ["b", "a", "c", "a"], "image_embedding": pa.array(vectors, pa.list_(pa.float32()))}), path)
    table = load_classes(spark, str(path), [View("image", "image_embedding")])["image"]
    assert table.class_ids == ["a", "b", "c"] and table.prompts == (2, 1, 1)
    np.testing.assert_allclose(table.vectors[0], [2 ** -0.5, 2 ** -0.5, 0.0], rtol=1e-6)
    single = np.asarray([0.3, 0.1, 0.7], np.float32).astype(np.float64)
    np.testing.assert_array_equal(table.vectors[2], (single / np.linalg.norm(single)).astype(np.float32))


def test_pair_masks_made_on_demand_give_the_stored_answers(spark, catalog, tmp_path, monkeypatch):
    """A model above STORED_PAIRS_MAX pairs stores no masks (made on the workers from the statistics):
    forced on this small catalog, its run answers as the stored model's does, every method and
    bracket, and masks.parquet holds no row for it. It is also shipped to the workers by reference
    (as a large model is: spark/transform.ShippedViews), with the same answers."""
    from pairspark.core import model as model_module
    from pairspark.spark import transform
    from pairspark.spark.model_io import load_model

    (items_path, classes_path), _, _ = catalog
    real_ship = transform.ship_bytes
    for candidates in ("0", "3"):
        settings = load_settings(None, {"min_margin": "0", "candidates": candidates,
                                        "methods": "base,pairwise,roundrobin,cotrain"})
        monkeypatch.setattr(model_module, "STORED_PAIRS_MAX", 10**9)
        pipeline.run(spark, items_path, classes_path, VIEWS, str(tmp_path / f"stored{candidates}"), settings)
        monkeypatch.setattr(model_module, "STORED_PAIRS_MAX", 0)
        monkeypatch.setattr(transform, "SHIP_BY_FILE_BYTES", 0)
        shipped = []
        monkeypatch.setattr(transform, "ship_bytes", lambda *a, **k: shipped.append(a[2]) or real_ship(*a, **k))
        pipeline.run(spark, items_path, classes_path, VIEWS, str(tmp_path / f"ondemand{candidates}"), settings)
        assert shipped == [".views.pkl"]
        monkeypatch.undo()
        views, metadata = load_model(spark, str(tmp_path / f"ondemand{candidates}" / "model"))
        assert all(v.on_demand for v in views)
        assert [v["pair_masks"] for v in metadata["pairspark"]["views"]] == ["on_demand", "on_demand"]
        assert len(pd.read_parquet(tmp_path / f"ondemand{candidates}" / "model" / "masks.parquet")) == 0
        a = pd.read_parquet(tmp_path / f"stored{candidates}" / "predictions").sort_values("item_id").reset_index(drop=True)
        b = pd.read_parquet(tmp_path / f"ondemand{candidates}" / "predictions").sort_values("item_id").reset_index(drop=True)
        for view in ("image", "text"):
            for method in ("base", "pairwise", "roundrobin"):
                assert a[f"{view}_{method}"].equals(b[f"{view}_{method}"]), (candidates, view, method)


def test_a_fit_pass_in_row_chunks_gives_the_moments_of_whole_batches(spark, catalog, tmp_path, monkeypatch):
    """A fit's passes work on row chunks of at most CHUNK_CELLS rows x classes, as classify does (a
    worker at 10,000 classes held 5.5 GB of (rows x C) arrays): chunks of 7 rows give the confident
    moments of whole batches bit for bit (one merge per batch, its rows in order), and cotrain's
    sums over the chunks the same discriminants up to the order of the additions."""
    from pairspark.core import batches
    from pairspark.spark.model_io import load_model

    (items_path, classes_path), _, _ = catalog
    settings = load_settings(None, {"min_margin": "0.2", "methods": "base,pairwise,cotrain"})
    pipeline.fit(spark, items_path, classes_path, VIEWS, str(tmp_path / "whole"), settings)
    from pairspark.spark import passes

    monkeypatch.setattr(batches, "CHUNK_CELLS", 5 * 7)  # 5 classes: 7-row chunks
    sizes = []
    monkeypatch.setattr(passes, "chunk_rows", lambda n: sizes.append(batches.chunk_rows(n)) or sizes[-1])
    pipeline.fit(spark, items_path, classes_path, VIEWS, str(tmp_path / "chunked"), settings)
    assert sizes and set(sizes) == {7}  # every pass ran in 7-row chunks
    whole, _ = load_model(spark, str(tmp_path / "whole"))
    chunked, _ = load_model(spark, str(tmp_path / "chunked"))
    for a, b in zip(whole, chunked):
        for name in ("count", "mean", "m2"):
            np.testing.assert_array_equal(getattr(a.moments, name), getattr(b.moments, name))
        np.testing.assert_allclose(a.scorers["cotrain"].weights, b.scorers["cotrain"].weights, rtol=1e-9, atol=1e-12)
        assert a.moments.count.sum() > 0


def test_a_model_that_makes_its_masks_on_demand_is_written_compact_and_reloads_bit_for_bit(spark, tmp_path):
    """Issue 28's model directory: above 256 classes the statistics and scorers are float32 and
    sumsq is not written (4 x C x D float32 per view with one scorer); the fitted view holds the
    same rounded values, so the reloaded one answers with its bits. A small model stays float64."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pairspark.core.masks import MaskSettings
    from pairspark.core.model import fit_view
    from pairspark.core.scorers import Scorer
    from pairspark.spark.model_io import load_model, model_view_meta, save_model
    from tests.test_pair_cache import random_model

    for n_classes, compact in ((300, True), (12, False)):
        prompts, _, moments = random_model(3, n_classes, 16, n_items=2000)
        rng = np.random.default_rng(n_classes)
        scorer = Scorer(rng.normal(size=(n_classes, 16)), rng.normal(size=n_classes), None, 0.5, 20.0)
        view = fit_view("v", "v_embedding", [f"c{i}" for i in range(n_classes)], prompts, moments, MaskSettings(),
                        scorers={"cotrain": scorer})
        assert view.on_demand == compact
        path = str(tmp_path / f"model{n_classes}")
        save_model(spark, [view], {"pairspark": {"views": [model_view_meta(view, 2000)],
                                                 "mask_settings": vars(MaskSettings())}}, path)
        stats = pq.read_table(f"{path}/stats.parquet")
        weights = pq.read_table(f"{path}/scorers.parquet").schema.field("weights").type.value_type
        assert ("sumsq" not in stats.column_names) == compact
        assert stats.schema.field("m2").type.value_type == weights == (pa.float32() if compact else pa.float64())
        (back,), _ = load_model(spark, path)
        for name in ("count", "mean", "m2"):
            np.testing.assert_array_equal(getattr(back.moments, name), getattr(view.moments, name))
        np.testing.assert_array_equal(back.scorers["cotrain"].weights, view.scorers["cotrain"].weights)
        np.testing.assert_array_equal(back.scorers["cotrain"].bias, scorer.bias)
        if compact:  # rounded once, at fit: the fitted view's values are float32 values
            assert np.array_equal(view.moments.m2, view.moments.m2.astype(np.float32))
            assert not np.array_equal(view.scorers["cotrain"].weights, scorer.weights)
        else:
            np.testing.assert_array_equal(view.scorers["cotrain"].weights, scorer.weights)


def test_a_taxonomy_of_10000_classes_fits_and_classifies_a_small_catalog_with_defaults(spark, tmp_path):
    """10,000 classes: 50 million pairs per view, which no model can store; the default run makes
    the pairs its items meet, and its report holds no C x C matrix."""
    from pairspark.spark.model_io import load_model

    items, classes, truth = make_catalog(3000, 32, 10_000, seed=5, noise=0.3)
    items_path, classes_path = write_catalog(tmp_path / "catalog", items, classes)
    report = pipeline.run(spark, items_path, classes_path, VIEWS, str(tmp_path / "out"), load_settings(), label_col="label")
    views, _ = load_model(spark, str(tmp_path / "out" / "model"))
    assert all(v.on_demand and v.n_classes == 10_000 for v in views)
    predictions = pd.read_parquet(tmp_path / "out" / "predictions").sort_values("item_id")
    assert len(predictions) == 3000
    for view in ("image", "text"):
        accuracy = {m: report["vs_label"][view][m]["accuracy"] for m in ("base", "pairwise", "cotrain")}
        assert accuracy["pairwise"] >= accuracy["base"] - 0.02 and accuracy["base"] > 0.9, accuracy
        assert "confusion" not in report["vs_label"][view]["base"] and report["vs_label"][view]["base"]["confusion_cells"]
        # the answer leads the top-k, and the tournament played only among base's top 16
        assert (predictions[f"{view}_class"] == predictions[f"{view}_top"].map(lambda t: t[0]["class_id"])).all()
    # the candidate rule's recall in the report: the labels' ranks by base cosine, brute force
    recall = report["candidates"]
    assert recall["bracket"] == 16 and recall["items"] == 3000
    for view in ("image", "text"):
        x = items[f"{view}_embedding"].astype(np.float64)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        model = [v for v in views if v.name == view][0]
        cos = x @ model.class_vectors.astype(np.float64).T
        label = np.array([model.class_ids.index(c) for c in items["label"]])
        rank = 1 + (cos > cos[np.arange(3000), label][:, None]).sum(axis=1)
        got = recall["views"][view]
        assert got["at_bracket"] == np.mean(rank <= 16) and got["recall"]["1"] == np.mean(rank == 1)
        assert got["recall"]["64"] == np.mean(rank <= 64) and got["labels_not_classes"] == 0
        assert got["recall"]["1"] < got["at_bracket"] <= got["recall"]["64"]
    assert "Candidates" in (tmp_path / "out" / "report" / "report.html").read_text()


def test_models_written_before_on_demand_masks_load_and_an_unknown_mask_kind_is_a_one_line_error(spark, catalog, tmp_path):
    """A model directory from before on-demand masks has no "pair_masks" key: its masks.parquet is
    read as stored masks, as then; a kind this version does not know stops with a message naming it."""
    from pairspark.spark.model_io import load_model, read_metadata, write_metadata

    (items_path, classes_path), _, _ = catalog
    model = str(tmp_path / "m")
    pipeline.fit(spark, items_path, classes_path, VIEWS, model, load_settings(None, {"min_margin": "0"}))
    views, metadata = load_model(spark, model)
    old = json.loads(json.dumps(metadata))
    for view in old["pairspark"]["views"]:
        del view["pair_masks"]
        view["mask_dims"].pop("sampled_pairs")
    write_metadata(spark, old, model, "overwrite")
    again, _ = load_model(spark, model)
    for a, b in zip(views, again):
        assert not b.on_demand and list(a.masks) and all(np.array_equal(x, y) for x, y in zip(a.masks, b.masks))
    future = read_metadata(spark, model)
    future["pairspark"]["views"][0]["pair_masks"] = "sharded"
    future["pairspark"]["pairspark_version"] = "9.0.0"
    write_metadata(spark, future, model, "overwrite")
    with pytest.raises(UsageError, match=r"view image has pair_masks 'sharded', which this pairspark \S+ cannot read "
                                         r"\(it knows stored, on_demand\); classify with the pairspark that wrote it "
                                         r"\(version 9.0.0\) or refit"):
        load_model(spark, model)
