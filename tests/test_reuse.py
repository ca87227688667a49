"""--warm-start: a fit whose inputs are those of the model at OUT reuses that model (reuse.py)."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pairspark import pipeline, reuse
from pairspark.config import View, load_settings
from tests.synthetic import make_catalog, write_catalog

pytestmark = pytest.mark.pyspark35
VIEWS = [View("image", "image_embedding"), View("text", "text_embedding")]
PARTS = ("items", "classes", "labels", "settings", "spark", "versions")


class _Files:
    """The FileSystem calls decide makes, over a dict of meta.json contents."""

    def __init__(self, metas: dict[str, dict]):
        self.metas = metas

    def qualify(self, path):
        return f"file:{path}"

    def exists(self, path):
        return path.removesuffix("/meta.json") in self.metas

    def read_json(self, path):
        return self.metas[path.removesuffix("/meta.json")]


def _prints(**changed):
    return {p: changed.get(p, f"h-{p}") for p in PARTS}


def test_decide_names_every_changed_part():
    files = _Files({"/m": {"fingerprint": _prints(), "created_at": "t0", "reads": 2, "fit_seconds": 9.5}})
    assert reuse.decide(files, "/m", _prints(items="new", settings="new")) == {
        "model": "file:/m", "reused": False, "reason": "the items changed; the fit settings changed"}
    assert reuse.decide(files, "/m", _prints()) == {"model": "file:/m", "reused": True, "fitted_at": "t0",
                                                    "reads_saved": 2, "seconds_saved": 9.5}


def test_decide_carries_the_first_fit_through_a_chain_of_reuses_and_refuses_what_it_cannot_compare():
    carried = {"reused": True, "fitted_at": "t0", "reads_saved": 2, "seconds_saved": 9.5}
    files = _Files({"/m": {"fingerprint": _prints(), "created_at": "t1", "warm_start": carried},
                    "/old": {"created_at": "t0"}})
    assert reuse.decide(files, "/m", _prints())["fitted_at"] == "t0"
    assert reuse.decide(files, "/old", _prints())["reason"] == "it records no fingerprint of its inputs"
    assert reuse.decide(files, "/gone", _prints())["reason"].startswith("it holds no pairspark model")
    assert reuse.decide(files, "/m", "the items are not files Spark can list")["reused"] is False


def test_a_table_source_or_a_bad_warm_start_value_is_never_reused():
    from pairspark.config import load_settings as settings_of
    from pairspark.errors import UsageError

    sources = {"items": "table:db.items", "classes": "/c.parquet", "labels": None}
    assert reuse.fingerprint(None, None, None, sources, None, {}, {}, False).startswith("a source is a table")
    with pytest.raises(UsageError, match="--warm-start: must be auto, off or a MODEL_DIR"):
        settings_of(None, {"warm_start": "false"})


@pytest.fixture()
def catalog(tmp_path):
    items, classes, _ = make_catalog(300, 8, 4, seed=5)
    # a space in the path: Spark lists the files URL-encoded
    return write_catalog(tmp_path / "my catalog", items, classes), items, classes


def _model_tables(folder) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(folder / name) for name in ("stats.parquet", "masks.parquet", "scorers.parquet")}


def test_an_unchanged_fit_reuses_the_model_at_out_and_records_what_it_saved(spark, catalog, tmp_path):
    (items_path, classes_path), _, _ = catalog
    out = tmp_path / "model"
    first = pipeline.fit(spark, items_path, classes_path, VIEWS, str(out), load_settings(None, {}))
    tables = _model_tables(out)
    assert "warm_start" not in first and set(first["fingerprint"]) == set(PARTS)
    assert first["reads"] == 2  # the sample's draw and cotrain's final pass, the moments riding on it

    again = pipeline.fit(spark, items_path, classes_path, VIEWS, str(out), load_settings(None, {}))
    assert again["warm_start"] == {"model": again["warm_start"]["model"], "reused": True, "fitted_at": first["created_at"],
                                   "reads_saved": 2, "seconds_saved": first["fit_seconds"]}
    assert again["warm_start"]["model"].endswith(str(out))
    for name, table in _model_tables(out).items():
        pd.testing.assert_frame_equal(table, tables[name], check_exact=True, obj=name)
    assert json.loads((out / "meta.json").read_text())["warm_start"]["reused"] is True

    elsewhere = pipeline.fit(spark, items_path, classes_path, VIEWS, str(tmp_path / "other"),
                             load_settings(None, {"warm_start": str(out)}))
    assert elsewhere["warm_start"]["reused"] and elsewhere["warm_start"]["fitted_at"] == first["created_at"]


def test_changed_items_or_settings_fit_cold_and_say_why(spark, catalog, tmp_path):
    (items_path, classes_path), _, _ = catalog
    out = tmp_path / "model"
    pipeline.fit(spark, items_path, classes_path, VIEWS, str(out), load_settings(None, {}))

    changed = pipeline.fit(spark, items_path, classes_path, VIEWS, str(out), load_settings(None, {"ratio_threshold": 1.3}))
    assert changed["warm_start"]["reused"] is False
    assert changed["warm_start"]["reason"] == "the fit settings changed"
    assert changed["reads"] == 2

    table = pq.read_table(items_path)
    pq.write_table(table.slice(0, len(table) - 1), items_path)  # last night's items less one
    fewer = pipeline.fit(spark, items_path, classes_path, VIEWS, str(out), load_settings(None, {"ratio_threshold": 1.3}))
    assert fewer["warm_start"]["reason"] == "the items changed"
    assert fewer["counts"]["valid_items"] == len(table) - 1

    cold = pipeline.fit(spark, items_path, classes_path, VIEWS, str(out),
                        load_settings(None, {"ratio_threshold": 1.3, "warm_start": "off"}))
    assert "warm_start" not in cold and cold["fingerprint"] == fewer["fingerprint"]  # recorded for tomorrow

    folder = tmp_path / "labels"
    folder.mkdir()
    pq.write_table(pa.table({"item_id": ["item-000001"], "label": ["c02"]}), folder / "part-0.parquet")
    labelled = {"ratio_threshold": 1.3, "labels": str(folder / "part-*.parquet")}  # a glob, as Spark reads it
    assert pipeline.fit(spark, items_path, classes_path, VIEWS, str(out), load_settings(None, labelled))[
        "warm_start"]["reason"] == "the labels changed"
    assert pipeline.fit(spark, items_path, classes_path, VIEWS, str(out), load_settings(None, labelled))["warm_start"]["reused"]
    pq.write_table(pa.table({"item_id": ["item-000001", "item-000002"], "label": ["c02", "c03"]}), folder / "part-0.parquet")
    assert pipeline.fit(spark, items_path, classes_path, VIEWS, str(out), load_settings(None, labelled))[
        "warm_start"]["reason"] == "the labels changed"


def test_a_nightly_run_with_unchanged_inputs_reuses_its_model_and_gives_the_same_predictions(spark, catalog, tmp_path):
    (items_path, classes_path), _, _ = catalog
    out = tmp_path / "out"
    pipeline.run(spark, items_path, classes_path, VIEWS, str(out), load_settings(None, {}))
    before = pd.read_parquet(out / "predictions").sort_values("item_id", ignore_index=True)
    fitted = json.loads((out / "model" / "meta.json").read_text())["created_at"]
    pipeline.run(spark, items_path, classes_path, VIEWS, str(out), load_settings(None, {}))
    meta = json.loads((out / "model" / "meta.json").read_text())
    assert meta["warm_start"]["reused"] is True and meta["warm_start"]["fitted_at"] == fitted
    after = pd.read_parquet(out / "predictions").sort_values("item_id", ignore_index=True)
    pd.testing.assert_frame_equal(after, before, check_exact=True)
