"""Every --methods answer from the Spark pipeline against a numpy computation on all items at once."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pairspark import pipeline
from pairspark.config import View, load_settings
from pairspark.core.cosine import unit_rows64
from pairspark.core.masks import MaskSettings
from pairspark.core.scorers import (
    LabelStats,
    centroid_scorer,
    gnb_scorer,
    ovr_masks,
    ovr_predict,
    softmax,
    transductive_initial,
    transductive_scorer,
)
from pairspark.core.stats import ClassMoments
from pairspark.errors import UsageError
from pairspark.core.em import TRANSDUCTIVE_ITERATIONS
from tests.synthetic import make_catalog, write_catalog

pytestmark = pytest.mark.pyspark35  # also run on pyspark 3.5 by scripts/test
VIEWS = [View("image", "image_embedding"), View("text", "text_embedding")]
ALL = "base,pairwise,ovr,roundrobin,centroid,gnb,transductive,labelshift,cotrain"


@pytest.fixture(scope="module")
def fitted(spark, tmp_path_factory):
    items, classes, truth = make_catalog(700, 12, 4, seed=3, noise=1.6)
    folder = tmp_path_factory.mktemp("methods")
    items_path, classes_path = write_catalog(folder, items, classes)
    # min_margin 0: every item is confident in round 1, so the references need no histogram
    settings = load_settings(None, {"methods": ALL, "min_margin": "0", "partitions": 3, "arrow_batch_size": 100})
    report = pipeline.run(spark, items_path, classes_path, VIEWS, str(folder / "run"), settings, label_col="label")
    pred = pd.read_parquet(folder / "run" / "predictions").set_index("item_id").loc[items["item_id"]]
    meta = json.loads((folder / "run" / "model" / "meta.json").read_text())
    xs = {v.name: unit_rows64(items[v.column]) for v in VIEWS}
    ts = {v.name: unit_rows64(classes[v.column]) for v in VIEWS}
    return pred, meta, report, xs, ts, truth


def _names(index):
    return [f"c{i:02d}" for i in index]


def _agree(spark_answers, numpy_answers):
    """Equal but for at most one item: summation order (partitions) may flip an exact near-tie."""
    return sum(a != b for a, b in zip(spark_answers, numpy_answers)) <= 1


def test_gnb_ovr_and_centroid_equal_numpy_on_all_items(fitted):
    pred, meta, _, xs, ts, _ = fitted
    for view in VIEWS:
        x, t = xs[view.name], ts[view.name]
        cos = x @ t.T
        base = cos.argmax(axis=1)
        moments = ClassMoments.from_batch(x, base, len(t))
        assert _agree(pred[f"{view.name}_gnb"], _names(gnb_scorer(moments).predict(x, cos)))
        keep = ovr_masks(moments, MaskSettings())
        assert pred[f"{view.name}_ovr"].tolist() == _names(ovr_predict(x, t, keep))
        scorer = centroid_scorer(LabelStats.from_labels(x, base, len(t)), t)
        for _ in range(2):
            scorer = centroid_scorer(LabelStats.from_labels(x, scorer.predict(x, cos), len(t)), t)
        assert _agree(pred[f"{view.name}_centroid"], _names(scorer.predict(x, cos)))


def test_transductive_equals_numpy_em_on_all_items(fitted):
    pred, _, _, xs, ts, _ = fitted
    for view in VIEWS:
        x, t = xs[view.name], ts[view.name]
        cos = x @ t.T
        z = transductive_initial(cos)
        for _ in range(TRANSDUCTIVE_ITERATIONS):
            scorer = transductive_scorer(LabelStats.from_weights(x, z))
            z = softmax(scorer.scores(x, cos))
        assert _agree(pred[f"{view.name}_transductive"], _names(z.argmax(axis=1)))


def test_labelshift_equals_a_numpy_em_of_the_priors_on_all_items(fitted):
    """Saerens et al.'s EM written out in float64 on every item (700: the sample is every item),
    independently of core/scorers.label_shift_priors, then the argmax of prior x probability."""
    pred, meta, _, xs, ts, _ = fitted
    assert meta["method_fits"]["labelshift"]["passes"] == 0
    for view in VIEWS:
        probs = softmax(100.0 * (xs[view.name] @ ts[view.name].T))
        priors = np.full(probs.shape[1], 1.0 / probs.shape[1])
        for _ in range(10_000):
            post = probs * priors / (probs * priors).sum(axis=1, keepdims=True)
            priors, before = post.mean(axis=0), priors
            if np.abs(priors - before).max() <= 1e-8:
                break
        assert _agree(pred[f"{view.name}_labelshift"], _names((probs * priors).argmax(axis=1)))


def _lda(x, labels, keep, n_classes, copies=1):
    """The discriminant on the kept rows, shrunk towards its diagonal by min(1, D / n): n the kept
    rows per copy (the rows of a cycle's `copies` rounds pooled weigh as one round's)."""
    xs, ls = x[keep], labels[keep]
    present = [c for c in range(n_classes) if np.any(ls == c)]
    means = {c: xs[ls == c].mean(axis=0) for c in present}
    within = sum((xs[ls == c] - means[c]).T @ (xs[ls == c] - means[c]) for c in present) / len(xs)
    d = x.shape[1]
    shrinkage = min(1.0, d / (len(xs) / copies))
    inverse = np.linalg.inv((1 - shrinkage) * within + shrinkage * np.diag(np.diag(within)))
    scores = np.full((len(x), n_classes), -np.inf)
    for c in present:
        scores[:, c] = x @ inverse @ means[c] - 0.5 * means[c] @ inverse @ means[c]
    return scores


def _margin(scores):
    top = np.sort(scores, axis=1)
    return top[:, -1] - top[:, -2]


def test_cotrain_equals_a_numpy_reference_loop_run_until_its_targets_repeat(fitted):
    """Round 1: every item confident (min_margin 0); then the 30% quantile of each view's margins.
    The rounds stop at the first repeated training set; the answer is the discriminant fitted on
    every training set of the cycle pooled (the mean of their statistics)."""
    pred, meta, _, xs, ts, _ = fitted
    a, b = xs["image"], xs["text"]
    n_classes = len(ts["image"])
    scores = [a @ ts["image"].T, b @ ts["text"].T]
    thresholds = [0.0, 0.0]
    history = []
    while True:
        labels = [s.argmax(axis=1) for s in scores]
        margins = [_margin(s) for s in scores]
        agree = labels[0] == labels[1]
        train = []
        for v in (0, 1):
            o = 1 - v
            own, other = margins[v] >= thresholds[v], margins[o] >= thresholds[o]
            train.append((np.where(agree | own, labels[v], labels[o]), agree | own | other))
        state = [np.where(keep, lab, -1).tolist() for lab, keep in train]
        if state in [h[0] for h in history]:
            cycle = history[[h[0] for h in history].index(state):]
            break
        history.append((state, train))
        scores = [_lda(x, lab, keep, n_classes) for x, (lab, keep) in zip((a, b), train)]
        thresholds = [np.quantile(_margin(s), 0.3) for s in scores]
    fit = meta["method_fits"]["cotrain"]
    assert fit["converged"] is True and fit["rounds"] == len(history) and fit["period"] == len(cycle)
    assert fit["passes"] == 0 and fit["sample_items"] == len(a)  # 700 items: the sample is every item
    for v, x in enumerate((a, b)):
        pooled_x = np.concatenate([x for _ in cycle])
        pooled_labels = np.concatenate([c[1][v][0] for c in cycle])
        pooled_keep = np.concatenate([c[1][v][1] for c in cycle])
        scores[v] = _lda(pooled_x, pooled_labels, pooled_keep, n_classes, len(cycle))[: len(x)]  # the pooled rows start with x
    assert _agree(pred["image_cotrain"], _names(scores[0].argmax(axis=1)))
    assert _agree(pred["text_cotrain"], _names(scores[1].argmax(axis=1)))
    assert pred["image_class"].tolist() == pred["image_cotrain"].tolist()  # cotrain is primary


def test_every_method_is_reported_and_the_refiners_beat_base_on_noisy_clusters(fitted):
    pred, meta, report, xs, ts, truth = fitted
    assert report["primary_method"] == "cotrain" and meta["methods"] == ALL.split(",")
    for method in ALL.split(","):
        for view in ("image", "text"):
            assert f"{view}_{method}" in pred.columns
            assert method in report["vs_label"][view]
    for view in ("image", "text"):
        base = report["vs_label"][view]["base"]["accuracy"]
        assert report["vs_label"][view]["cotrain"]["accuracy"] > base
        assert report["vs_label"][view]["gnb"]["accuracy"] > base


def test_classify_refuses_a_method_the_model_was_not_fitted_for_and_cotrain_needs_two_views(spark, tmp_path):
    items, classes, _ = make_catalog(120, 6, 3, seed=4)
    items_path, classes_path = write_catalog(tmp_path / "data", items, classes)
    model = str(tmp_path / "model")
    pipeline.fit(spark, items_path, classes_path, VIEWS, model, load_settings(None, {"methods": "base,pairwise"}))
    with pytest.raises(UsageError, match="not fitted for cotrain"):
        pipeline.classify(spark, items_path, model, str(tmp_path / "p"), load_settings(None, {"methods": "cotrain"}))
    with pytest.raises(UsageError, match="cotrain needs two views"):
        pipeline.fit(spark, items_path, classes_path, VIEWS[:1], str(tmp_path / "m1"), load_settings(None, {"methods": "cotrain"}))
    # auto with one view: base, pairwise and selftrain, whose reproducibility check is recorded per view
    meta = pipeline.fit(spark, items_path, classes_path, VIEWS[:1], str(tmp_path / "m2"), load_settings())
    assert meta["methods"] == ["base", "pairwise", "selftrain"]
    fact = meta["method_fits"]["selftrain"]["views"][VIEWS[0].name]
    assert fact["converged"] and len(fact["reproduced"]) == 5 and isinstance(fact["trusted"], bool)
    out = str(tmp_path / "p1")
    pipeline.classify(spark, items_path, str(tmp_path / "m2"), out, load_settings())
    got = spark.read.parquet(out)
    name = VIEWS[0].name
    assert got.filter(f"{name}_class <=> {name}_selftrain").count() == got.count()
