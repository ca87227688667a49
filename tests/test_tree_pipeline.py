"""Class trees through the pipeline: the classes table's parent_id, the path columns, the back-off
and the tree's evaluation, each against a brute-force reading of the published rows."""

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
from tests.synthetic import make_catalog, write_catalog

pytestmark = pytest.mark.pyspark35  # also run on pyspark 3.5 by scripts/test

VIEWS = [View("image", "image_embedding"), View("text", "text_embedding")]
# two roots; r0 > {c00, c01, m} and m > {c02, c03}: ragged depth; r1 > {c04, c05}
PARENTS = {"r0": None, "r1": None, "m": "r0", "c00": "r0", "c01": "r0", "c02": "m", "c03": "m", "c04": "r1", "c05": "r1"}


def tree_catalog(folder, items, classes):
    """The flat catalog's classes as the leaves of PARENTS, inner nodes with a text prompt only."""
    items_path, flat_path = write_catalog(folder, items, classes)
    rng = np.random.default_rng(1)
    rows = {"class_id": [], "parent_id": [], "image_embedding": [], "text_embedding": []}
    for node, parent in PARENTS.items():
        rows["class_id"].append(node)
        rows["parent_id"].append(parent)
        leaf = node.startswith("c")
        at = classes["class_id"].index(node) if leaf else None
        rows["image_embedding"].append(list(classes["image_embedding"][at]) if leaf else None)
        rows["text_embedding"].append(list(classes["text_embedding"][at]) if leaf else list(rng.normal(size=16)))
    tree_path = str(folder / "tree.parquet")
    pq.write_table(pa.table(rows, schema=pa.schema([("class_id", pa.string()), ("parent_id", pa.string()),
                                                     ("image_embedding", pa.list_(pa.float32())),
                                                     ("text_embedding", pa.list_(pa.float32()))])), tree_path)
    return items_path, flat_path, tree_path


def ancestors(node):
    chain = []
    while node is not None:
        chain.insert(0, node)
        node = PARENTS[node]
    return chain


@pytest.fixture(scope="module")
def tree_run(spark, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tree")
    items, classes, truth = make_catalog(900, 16, 6, seed=3, noise=1.2)
    # a fifth of the items are labelled only to level 1 (their root), as a coarse catalog has them
    coarse = np.random.default_rng(2).random(900) < 0.2
    items["label"] = [ancestors(label)[0] if c else label for label, c in zip(items["label"], coarse)]
    items_path, flat_path, tree_path = tree_catalog(folder, items, classes)
    settings = load_settings(None, {"candidates": "0"})
    report = pipeline.run(spark, items_path, tree_path, VIEWS, str(folder / "tree"), settings, label_col="label")
    flat = pipeline.run(spark, items_path, flat_path, VIEWS, str(folder / "flat"), settings, label_col="label")
    read = lambda name: pd.read_parquet(folder / name / "predictions").sort_values("item_id").reset_index(drop=True)
    return report, flat, read("tree"), read("flat"), folder


def test_tree_answers_are_the_flat_answers_on_the_leaves_with_consistent_paths_and_back_off(tree_run):
    report, _, tree, flat, _ = tree_run
    # every flat column is unchanged by the tree, but the tournament's (its matches use sibling masks:
    # tests/test_tree.py), which is neither the primary nor calibrated on its own
    for column in (c for c in flat.columns if not c.endswith("_pairwise")):
        assert tree[column].equals(flat[column]) or all(a == b for a, b in zip(tree[column], flat[column])), column
    for view in ("image", "text"):
        for cls, path, conf, back, leaf_conf in zip(tree[f"{view}_class"], tree[f"{view}_path"],
                                                    tree[f"{view}_path_confidence"], tree[f"{view}_backoff"],
                                                    tree[f"{view}_confidence"]):
            assert list(path) == ancestors(cls)
            assert len(conf) == len(path) and np.all(np.diff(conf) <= 0) and conf[-1] == pytest.approx(leaf_conf, abs=1e-6)
            reached = [node for node, c in zip(path, conf) if float(c) >= 0.9]
            assert back == (reached[-1] if reached else None)
        assert report["tree"]["consistent"][view] == 1.0


def test_tree_metrics_match_a_brute_force_reading_of_the_predictions(tree_run):
    report, flat_report, tree, _, _ = tree_run
    assert "tree" not in flat_report
    section = report["tree"]
    assert (section["levels"], section["nodes"], section["leaves"]) == (3, 9, 6)
    for view in ("image", "text"):
        for method in ("base", "pairwise", "cotrain"):
            got = section["vs_label"][view][method]
            overlap = predicted = truth = 0
            for k in (1, 2, 3):
                rows = [(ancestors(a), ancestors(l)) for a, l in zip(tree[f"{view}_{method}"], tree["label"])
                        if len(ancestors(l)) >= k]
                right = [len(p) >= k and p[k - 1] == t[k - 1] for p, t in rows]
                assert got["by_level"][str(k)] == {"items": len(rows), "accuracy": pytest.approx(np.mean(right))}
            for a, l in zip(tree[f"{view}_{method}"], tree["label"]):
                p, t = set(ancestors(a)), set(ancestors(l))
                overlap, predicted, truth = overlap + len(p & t), predicted + len(p), truth + len(t)
            assert got["hierarchical_precision"] == pytest.approx(overlap / predicted)
            assert got["hierarchical_recall"] == pytest.approx(overlap / truth)
        backoff = section["backoff"][view]
        for depth in (1, 2, 3):
            rows = [(b, l) for b, l in zip(tree[f"{view}_backoff"], tree["label"]) if b is not None and len(ancestors(b)) == depth]
            right = [ancestors(b)[: len(ancestors(l))] == ancestors(l)[: len(ancestors(b))] for b, l in rows]
            assert backoff["by_depth"][str(depth)]["items"] == len(rows)
            if rows:
                assert backoff["by_depth"][str(depth)]["precision"] == pytest.approx(np.mean(right))
        assert backoff["none"] == pytest.approx(np.mean([b is None for b in tree[f"{view}_backoff"]]))
        for k in (1, 2, 3):  # ECE by hand: equal-width bins of the level's path confidence
            from pairspark.core.calibration import ECE_BINS

            rows = [(float(c[k - 1]), p[k - 1] == ancestors(l)[k - 1]) for p, c, l in
                    zip(tree[f"{view}_path"], tree[f"{view}_path_confidence"], tree["label"])
                    if len(p) >= k and len(ancestors(l)) >= k]
            conf, right = np.array([r[0] for r in rows]), np.array([r[1] for r in rows], float)
            bins = np.clip(np.floor(conf * ECE_BINS), 0, ECE_BINS - 1)
            ece = sum(abs(right[bins == b].mean() - conf[bins == b].mean()) * (bins == b).sum() / len(rows)
                      for b in range(ECE_BINS) if (bins == b).any())
            assert section["calibration"][view][str(k)] == {"ece": pytest.approx(ece), "items": len(rows)}


@pytest.mark.parametrize("rows, message", [
    ({"c00": "r0", "c01": "nowhere"}, "node 'c01' has parent_id 'nowhere', which is no node of the table"),
    ({"r0": "c01", "c00": "r0", "c01": "r0"}, "cycle through node"),
])
def test_a_bad_tree_is_a_one_line_usage_error(spark, tmp_path, rows, message):
    items, classes, _ = make_catalog(60, 8, 3, seed=1)
    items_path, _ = write_catalog(tmp_path, items, classes)
    nodes = list(rows) + [c for c in ("r0",) if c not in rows]
    vectors = [list(np.ones(8, np.float32) * (i + 1) * (-1) ** i) for i, _ in enumerate(nodes)]
    table = pa.table({"class_id": nodes, "parent_id": [rows.get(n) for n in nodes], "image_embedding": vectors,
                      "text_embedding": vectors})
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(UsageError, match=message) as raised:
        pipeline.fit(spark, items_path, str(tmp_path / "bad.parquet"), VIEWS, str(tmp_path / "m"), load_settings())
    assert "\n" not in str(raised.value)


def test_a_class_with_two_parents_or_a_leaf_without_a_prompt_is_a_one_line_usage_error(spark, tmp_path):
    items, classes, _ = make_catalog(60, 8, 3, seed=1)
    items_path, _ = write_catalog(tmp_path, items, classes)
    v = [1.0] * 8
    two = pa.table({"class_id": ["r", "s", "a", "a", "b"], "parent_id": [None, None, "r", "s", "r"],
                    "image_embedding": [None, None, v, v, [-1.0] * 8], "text_embedding": [v, v, v, v, [-1.0] * 8]})
    pq.write_table(two, tmp_path / "two.parquet")
    with pytest.raises(UsageError, match=r"class 'a' has rows with different parent_id \('r' and 's'\)"):
        pipeline.fit(spark, items_path, str(tmp_path / "two.parquet"), VIEWS, str(tmp_path / "m1"), load_settings())
    bare = pa.table({"class_id": ["r", "a", "b"], "parent_id": [None, "r", "r"],
                     "image_embedding": [None, v, None], "text_embedding": [v, v, [-1.0] * 8]})
    pq.write_table(bare, tmp_path / "bare.parquet")
    with pytest.raises(UsageError, match="is null or empty for leaf b of the class tree: a leaf needs a prompt in every view"):
        pipeline.fit(spark, items_path, str(tmp_path / "bare.parquet"), VIEWS, str(tmp_path / "m2"), load_settings())


def test_the_review_queue_takes_the_items_whose_back_off_stops_above_the_leaf_with_the_level_the_views_part(tree_run):
    _, _, tree, _, folder = tree_run
    queue = pd.read_parquet(folder / "tree" / "review" / "items").set_index("item_id")
    summary = json.loads((folder / "tree" / "review" / "summary.json").read_text())
    above = tree[tree["image_backoff"].isna() | (tree["image_backoff"] != tree["image_class"])]
    assert len(above) and summary["by_reason"]["backoff_above_leaf"] == len(above)
    for _, row in above.iterrows():
        assert "backoff_above_leaf" in queue.loc[row["item_id"], "reasons"]
    for _, row in tree.iterrows():
        a, b = list(row["image_path"]), list(row["text_path"])
        expected = next((k + 1 for k, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if row["item_id"] in queue.index:
            got = queue.loc[row["item_id"], "disagree_level"]
            assert (None if pd.isna(got) else int(got)) == expected
        else:
            assert expected is None
    csv = pd.read_csv(folder / "tree" / "review" / "review.csv")
    assert csv["image_path"].str.contains(" > ").all()
