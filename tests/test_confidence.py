"""NAME_confidence and NAME_top: calibrated at fit, in [0, 1], sorted, consistent with NAME_class."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pairspark import pipeline
from pairspark.config import View, load_settings
from pairspark.core.calibration import fit_temperature, probabilities
from pairspark.core.cosine import unit_rows64
from pairspark.core.targets import margin_threshold, top_margin
from tests.synthetic import make_catalog, write_catalog

pytestmark = pytest.mark.pyspark35  # also run on pyspark 3.5 by scripts/test
VIEWS = [View("image", "image_embedding"), View("text", "text_embedding")]


@pytest.fixture(scope="module")
def run(spark, tmp_path_factory):
    items, classes, truth = make_catalog(400, 10, 5, seed=11, noise=1.4)
    folder = tmp_path_factory.mktemp("confidence")
    items_path, classes_path = write_catalog(folder, items, classes)
    model = str(folder / "model")
    meta = pipeline.fit(spark, items_path, classes_path, VIEWS, model, load_settings())
    out = str(folder / "p")
    pipeline.classify(spark, items_path, model, out, load_settings(None, {"top_k": 2}))
    return items, classes, meta, pd.read_parquet(out).sort_values("item_id").reset_index(drop=True), items_path, model, folder


def test_confidence_is_the_first_of_the_top_k_which_are_sorted_probabilities_led_by_the_answer(run):
    _, _, _, pred, *_ = run
    for view in ("image", "text"):
        conf = pred[f"{view}_confidence"].to_numpy()
        assert ((conf >= 0) & (conf <= 1)).all()
        for cls, c, top in zip(pred[f"{view}_class"], conf, pred[f"{view}_top"]):
            scores = [t["score"] for t in top]
            assert len(top) == 2 and scores == sorted(scores, reverse=True) and sum(scores) <= 1 + 1e-6
            assert top[0]["class_id"] == cls and top[0]["score"] == pytest.approx(c)


def _held_out_cotrain(items, views, verified):
    """numpy reference of cotrain's held-out scores: the rounds replayed on all items, each row
    scored by a discriminant refitted from scratch without its fold (the cycle's targets fixed)."""
    from pairspark.core.fitting import mean_stats, training_stats
    from pairspark.core.held_out import calibration_folds
    from pairspark.core.rounds import cotrain_round, train_until_repeat
    from pairspark.core.scorers import lda_scorer

    names = [v.name for v in views]
    xs = {v.name: unit_rows64(items[f"{v.name}_embedding"]) for v in views}
    cos = {v.name: xs[v.name] @ v.vectors64.T for v in views}
    trained = train_until_repeat(names, xs, cos, verified, [v.min_margin_used for v in views], cotrain_round, 0.3)
    folds = calibration_folds(len(verified))
    held = {}
    for i, n in enumerate(names):
        held[n] = np.empty_like(cos[n])
        for k in np.unique(folds):
            rest, fold = folds != k, folds == k
            parts = [training_stats(xs[n][rest], t[i][0][rest], t[i][1][rest], verified[rest], len(views[i].class_ids), True)
                     for t in trained.cycle_targets]
            held[n][fold] = lda_scorer(mean_stats(parts)).scores(xs[n][fold], cos[n][fold])
    return xs, cos, held


def _binary_nll_temperature(scores, answers, right, weights):
    """Brute force over a fine grid of the answer's weighted binary log-loss."""
    rows = np.arange(len(answers))
    grid = np.exp(np.linspace(np.log(1e-3), np.log(1e3), 6001))

    def loss(t):
        z = scores / t
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        log_p = z[rows, answers] - np.log(e.sum(axis=1))
        log_rest = np.log(e.sum(axis=1) - e[rows, answers] + 1e-300) - np.log(e.sum(axis=1))
        return -np.sum(weights * (right * log_p + (1 - right) * log_rest))

    return grid[np.argmin([loss(t) for t in grid])]


def test_the_temperatures_fit_held_out_answers_to_the_other_views_zero_shot_answers(spark, run):
    """Every item is in the driver's sample (400 < 10,000). Each view's cotrain temperature is the
    binary log-loss fit of its held-out answers' probabilities to whether the other view's base
    answer confirms them (where the two base answers agree or the other one is confident)."""
    items, classes, meta, pred, *_ = run
    from pairspark.spark.model_io import load_model

    assert meta["calibration"]["fitted_on"] == "the other view's zero-shot answers"
    views, _ = load_model(spark, run[5])
    xs, cos, held = _held_out_cotrain(items, views, np.full(len(items["item_id"]), -1))
    base = {v.name: cos[v.name].argmax(axis=1) for v in views}
    margin = {v.name: np.sort(cos[v.name], axis=1)[:, -1] - np.sort(cos[v.name], axis=1)[:, -2] for v in views}
    for v, other in zip(views, reversed(views)):
        agree = base[v.name] == base[other.name]
        keep = agree | (margin[other.name] >= other.min_margin_used)
        answers = held[v.name].argmax(axis=1)
        right = (answers == base[other.name]).astype(float)
        want = _binary_nll_temperature(held[v.name][keep], answers[keep], right[keep], np.ones(int(keep.sum())))
        assert v.calibration["cotrain"] == pytest.approx(want, rel=3e-3)
        probs = probabilities(v.scorers["cotrain"].scores(xs[v.name], cos[v.name]), v.calibration["cotrain"])
        np.testing.assert_allclose(pred[f"{v.name}_confidence"], probs.max(axis=1), rtol=1e-5, atol=1e-6)


def test_a_primary_that_only_names_a_winner_is_calibrated_on_base_cosines_with_its_winner_lifted(spark, run):
    items, _, _, _, items_path, model, folder = run
    out = str(folder / "pairwise")
    pipeline.classify(spark, items_path, model, out, load_settings(None, {"methods": "base,pairwise"}))
    pred = pd.read_parquet(out).sort_values("item_id").reset_index(drop=True)
    from pairspark.spark.model_io import load_model

    views, _ = load_model(spark, model)
    for v in views:
        winner = np.array([v.class_ids.index(c) for c in pred[f"{v.name}_pairwise"]])
        cos = unit_rows64(items[f"{v.name}_embedding"]) @ v.vectors64.T
        lifted = cos.copy()
        lifted[np.arange(len(winner)), winner] = np.nextafter(cos.max(axis=1), np.inf)
        probs = probabilities(lifted, v.calibration["pairwise"])
        np.testing.assert_allclose(pred[f"{v.name}_confidence"], probs[np.arange(len(winner)), winner], rtol=1e-5, atol=1e-6)
        assert [t[0]["class_id"] for t in pred[f"{v.name}_top"]] == pred[f"{v.name}_class"].tolist()
        assert len(pred[f"{v.name}_top"][0]) == 3  # the default top_k
        # where the winner is not base's answer, base's answer competes evenly: confidence <= 1/2
        assert (pred[f"{v.name}_confidence"][winner != cos.argmax(axis=1)] <= 0.5 + 1e-6).all()


def test_every_method_as_the_primary_leads_its_top_k_with_its_answer_and_its_confidence(spark, run, tmp_path):
    """NAME_top[0] is (NAME_class, NAME_confidence) and NAME_top is sorted, whichever method answers."""
    from pairspark.core.methods import METHODS, primary_method

    items, classes, _, _, items_path, _, folder = run
    model = str(tmp_path / "every")
    pipeline.fit(spark, items_path, str(folder / "classes.parquet"), VIEWS, model,
                 load_settings(None, {"methods": ",".join(METHODS), "warm_start": "off"}))
    for method in METHODS:
        assert primary_method((method,)) == method
        out = str(tmp_path / method)
        pipeline.classify(spark, items_path, model, out, load_settings(None, {"methods": method}))
        pred = pd.read_parquet(out)
        for view in ("image", "text"):
            assert (pred[f"{view}_class"] == pred[f"{view}_{method}"]).all()
            for cls, conf, top in zip(pred[f"{view}_class"], pred[f"{view}_confidence"], pred[f"{view}_top"]):
                scores = [t["score"] for t in top]
                assert top[0]["class_id"] == cls and top[0]["score"] == pytest.approx(conf), method
                assert scores == sorted(scores, reverse=True), method


def test_verified_labels_calibrate_with_the_second_opinion_as_a_prior_worth_20_labels(spark, tmp_path):
    """30 verified labels weigh 1 each and the other view's zero-shot answers 20 in all (numpy
    reference on held-out scores, where a verified row's own weight-5 training is taken out)."""
    from pairspark.spark.model_io import load_model

    items, classes, truth = make_catalog(300, 8, 3, seed=5)
    items_path, classes_path = write_catalog(tmp_path / "data", items, classes)
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"item_id": items["item_id"][:30], "label": items["label"][:30]}).to_csv(labels, index=False)
    meta = pipeline.fit(spark, items_path, classes_path, VIEWS, str(tmp_path / "m"), load_settings(None, {"labels": str(labels)}))
    assert meta["calibration"]["fitted_on"] == "30 verified labels, and the other view's zero-shot answers weighing as 20 labels"
    views, _ = load_model(spark, str(tmp_path / "m"))
    verified = np.full(300, -1)
    verified[:30] = truth[:30]
    xs, cos, held = _held_out_cotrain(items, views, verified)
    base = {v.name: cos[v.name].argmax(axis=1) for v in views}
    margin = {v.name: np.sort(cos[v.name], axis=1)[:, -1] - np.sort(cos[v.name], axis=1)[:, -2] for v in views}
    for v, other in zip(views, reversed(views)):
        keep = ((base[v.name] == base[other.name]) | (margin[other.name] >= other.min_margin_used)) & (verified < 0)
        weights = np.where(keep, 20 / keep.sum(), 0.0)
        weights[:30] = 1.0
        target = np.where(verified >= 0, verified, base[other.name])
        answers = held[v.name].argmax(axis=1)
        used = weights > 0
        want = _binary_nll_temperature(held[v.name][used], answers[used], (answers == target)[used].astype(float),
                                       weights[used])
        assert v.calibration["cotrain"] == pytest.approx(want, rel=3e-3)
        assert meta["calibration"]["views"][v.name]["items"]["cotrain"] == int(used.sum())


def test_one_view_fits_each_temperature_on_a_second_opinion_never_its_own_answers(spark, tmp_path):
    """With one view there is no other view to calibrate against: base's temperature is fitted on
    gnb's confident answers, a method that answers otherwise on base's (numpy reference)."""
    from pairspark.core.methods import gnb as gnb_of
    from pairspark.spark.model_io import load_model

    items, classes, _ = make_catalog(300, 8, 4, seed=12, noise=1.3, views=("image",))
    items_path, classes_path = write_catalog(tmp_path / "data", items, classes)
    meta = pipeline.fit(spark, items_path, classes_path, VIEWS[:1], str(tmp_path / "m"), load_settings())
    assert meta["calibration"]["fitted_on"].startswith("the view's own confident answers")
    (view,), _ = load_model(spark, str(tmp_path / "m"))
    x = unit_rows64(items["image_embedding"])
    cos = x @ view.vectors64.T
    gnb = gnb_of(view).scores(x, cos)
    keep = top_margin(gnb) >= margin_threshold(top_margin(gnb), 0.3)
    answers = cos.argmax(axis=1)
    right = (answers == gnb.argmax(axis=1)).astype(float)
    assert view.calibration["base"] == pytest.approx(fit_temperature(cos[keep], answers[keep], right[keep]), rel=1e-6)
    assert 1e-3 < view.calibration["base"] < 1.0  # not the degenerate T -> 0 of fitting base on its own answers


@pytest.mark.parametrize("calibration, own", [({"base": 0.05, "ovr": 0.02}, True), ({"base": 0.05}, False)])
def test_a_scored_method_uses_its_own_temperature_or_base_when_it_has_none(calibration, own):
    from pairspark.core.classify import classify
    from pairspark.core.methods import ovr_keep
    from pairspark.core.scorers import ovr_scores
    from tests.synthetic import tiny_view_model

    view = tiny_view_model("v", "c", 6, 3)
    view.calibration = dict(calibration)
    x = unit_rows64(np.random.default_rng(1).normal(size=(4, 6)))
    out = classify(view, x, np.arange(4, dtype=np.uint64), ("base", "ovr"), margin_of="ovr")
    rows = np.arange(4)
    want = (probabilities(ovr_scores(x, view.vectors64, ovr_keep(view)), 0.02) if own
            else probabilities(x @ view.vectors64.T, 0.05))[rows, out["ovr"]]
    np.testing.assert_allclose(out["confidence"], want, rtol=1e-12)


@pytest.mark.slow
def test_without_labels_the_confidence_of_a_small_real_catalog_is_honest(spark, tmp_path):
    """600 agnews items (150 per class, seed 0): two text views whose co-trained answers agree on
    many of their mistakes. Fitted to the other view's learned answers, the confidence said >= 0.9
    for 84-88% of the items, 84-85% right there (ECE 0.12-0.15); fitted to the other view's
    zero-shot answers it is within 0.10 of the accuracy, and the items at >= 0.9 are 90% right."""
    from pairspark.core.calibration import auroc, expected_calibration_error, reliability
    from tests.conftest import shared_set

    table = pd.read_parquet(shared_set("agnews") / "items.parquet", columns=["item_id", "title_embedding",
                                                                          "description_embedding", "label"])
    rng = np.random.default_rng(0)
    picked = np.sort(np.concatenate([rng.choice(np.flatnonzero(table["label"] == c), 150, replace=False)
                                     for c in sorted(table["label"].unique())]))
    items = str(tmp_path / "items.parquet")
    table.iloc[picked].to_parquet(items)
    views = [View("title", "title_embedding"), View("description", "description_embedding")]
    pipeline.fit(spark, items, str(shared_set("agnews") / "classes.parquet"), views, str(tmp_path / "m"), load_settings())
    pipeline.classify(spark, items, str(tmp_path / "m"), str(tmp_path / "p"), load_settings(), "label")
    pred = pd.read_parquet(tmp_path / "p")
    for view in ("title", "description"):
        right = (pred[f"{view}_class"] == pred["label"]).to_numpy()
        conf = pred[f"{view}_confidence"].to_numpy(np.float64)
        assert expected_calibration_error(reliability(conf, right)) <= 0.10, view
        assert right[conf >= 0.9].mean() >= 0.9 and auroc(conf, right) > 0.7, view
