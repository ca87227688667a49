"""Pair masks made on demand (core/pair_cache.py, core/ondemand.py) are the stored ones, bit for bit,
and the tournaments played on them are the stored tournaments."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from pairspark.core import methods
from pairspark.core.cosine import base_assign, top_candidates, unit_rows64
from pairspark.core.masks import MaskSettings, class_pairs, pair_masks
from pairspark.core.model import STORED_PAIRS_MAX, fit_view, stores_pairs
from pairspark.core.ondemand import play_round_robin_ondemand, play_tournament_ondemand
from pairspark.core.pair_cache import PairCache, build_pairs, sample_lengths, worker_cache
from pairspark.core.stats import ClassMoments
from pairspark.core.tournament import pair_coefficients, pair_weights, play_round_robin, play_tournament
from tests.conftest import shared_set
from tests.reference import normalize_rows


def random_model(seed: int, n_classes: int, dim: int, n_items: int = 600):
    """Unit prompts and the moments of items assigned by base cosine; some classes left with
    fewer than 2 items (their pairs keep every dim) and a constant dim (zero variance)."""
    rng = np.random.default_rng(seed)
    prompts = normalize_rows(rng.normal(size=(n_classes, dim)))
    x = normalize_rows(rng.normal(size=(n_items, dim)) + 2 * prompts[rng.integers(0, n_classes, n_items)])
    x[:, 0] = 0.25
    labels = np.argmax(x @ prompts.T, axis=1)
    labels[:3] = n_classes - 1  # a class with items even if base never picks it
    labels[labels == 0] = 1
    labels[labels == 2] = 3
    labels[5] = 0  # class 0 has one item, class 2 none: neither has a usable variance
    return prompts, x, ClassMoments.from_batch(x, labels, n_classes)


def real_model(name: str, column: str):
    folder = shared_set(name)
    items = pq.read_table(folder / "items.parquet", columns=[column]).column(column).to_pylist()
    classes = pq.read_table(folder / "classes.parquet", columns=[column]).column(column).to_pylist()
    x, prompts = unit_rows64(np.array(items, np.float64)), unit_rows64(np.array(classes, np.float64))
    labels = np.argmax(x @ prompts.T, axis=1)
    return prompts, x, ClassMoments.from_batch(x, labels, len(prompts))


def assert_built_equals_stored(prompts, moments, settings):
    stored = pair_masks(moments, settings)
    stored = type(stored)(*stored.csr(), dim=moments.dim)  # CSR whatever size
    coef = pair_coefficients(prompts, stored)
    weights = pair_weights(prompts, stored, coef, limit_bytes=2**40)
    pairs = class_pairs(len(prompts))
    usable = moments.count >= settings.min_class_count
    order = np.random.default_rng(0).permutation(len(pairs))  # any order, any grouping into blocks
    lengths, dims, w, c = build_pairs(prompts, moments.mean, moments.variance, usable, settings,
                                      pairs[order, 0], pairs[order, 1])
    starts = np.concatenate([[0], np.cumsum(lengths)])
    for i, p in enumerate(order):
        np.testing.assert_array_equal(dims[starts[i] : starts[i + 1]], stored[p])
        np.testing.assert_array_equal(w[starts[i] : starts[i + 1]], weights[stored.indptr[p] : stored.indptr[p + 1]])
    np.testing.assert_array_equal(c, coef[order])


@pytest.mark.parametrize("settings", [MaskSettings(), MaskSettings(ratio_threshold=1.05, min_dims=3, max_dims=20),
                                      MaskSettings(min_class_count=40)])
def test_pairs_built_on_demand_are_the_stored_bits_on_a_random_model(settings):
    prompts, _, moments = random_model(1, 30, 48)
    assert (moments.count < 2).any() and (moments.count >= 2).any()
    assert_built_equals_stored(prompts, moments, settings)


@pytest.mark.parametrize("column", ["image_embedding", "text_embedding"])
def test_pairs_built_on_demand_are_the_stored_bits_on_a_real_model(column):
    prompts, _, moments = real_model("fashion_clip", column)
    assert_built_equals_stored(prompts, moments, MaskSettings())


def stored_and_cache(prompts, moments, settings=MaskSettings(), max_bytes=2**30):
    stored = pair_masks(moments, settings)
    stored = type(stored)(*stored.csr(), dim=moments.dim)
    coef = pair_coefficients(prompts, stored)
    return stored, coef, PairCache(prompts, moments, settings, max_bytes=max_bytes)


@pytest.mark.parametrize("k", [0, 2, 5, 16])
def test_the_on_demand_tournament_is_the_stored_tournament(k):
    prompts, x, moments = random_model(2, 40, 32, n_items=900)
    stored, coef, cache = stored_and_cache(prompts, moments)
    keys = np.random.default_rng(3).integers(0, 2**63, size=len(x)).view(np.uint64)
    top = top_candidates(x @ prompts.T, k) if k else None
    weights = pair_weights(prompts, stored, coef, limit_bytes=2**40)
    want = play_tournament(x, prompts, stored, coef, keys, top, weights)
    np.testing.assert_array_equal(play_tournament(x, prompts, stored, coef, keys, top, None), want)
    np.testing.assert_array_equal(play_tournament_ondemand(x, cache, keys, top), want)
    # and again from the cache (a second batch finds the pairs built)
    built = cache.built
    np.testing.assert_array_equal(play_tournament_ondemand(x, cache, keys, top), want)
    assert cache.built == built
    # items classified in any batches get the same answers
    parts = [play_tournament_ondemand(x[s], PairCache(prompts, moments, MaskSettings()), keys[s], None if top is None else top[s])
             for s in (slice(0, 7), slice(7, 500), slice(500, None))]
    np.testing.assert_array_equal(np.concatenate(parts), want)


@pytest.mark.parametrize("k", [0, 6])
def test_the_on_demand_round_robin_is_the_stored_round_robin(k):
    prompts, x, moments = random_model(4, 25, 24, n_items=500)
    stored, coef, cache = stored_and_cache(prompts, moments)
    cosines = x @ prompts.T
    cosines[:50] = np.round(cosines[:50], 1)  # ties on cosine, decided by the lower index
    top = top_candidates(cosines, k) if k else None
    want = play_round_robin(x, prompts, stored, coef, cosines, top, None)
    np.testing.assert_array_equal(play_round_robin_ondemand(x, cache, cosines, top), want)


def test_a_full_cache_starts_over_with_the_same_answers():
    prompts, x, moments = random_model(5, 60, 32, n_items=800)
    stored, coef, _ = stored_and_cache(prompts, moments)
    keys = np.arange(len(x), dtype=np.uint64) * np.uint64(7919)
    top = top_candidates(x @ prompts.T, 8)
    want = play_tournament(x, prompts, stored, coef, keys, top, None)
    small = PairCache(prompts, moments, MaskSettings(), max_bytes=200_000)
    for s in range(0, len(x), 100):
        np.testing.assert_array_equal(play_tournament_ondemand(x[s : s + 100], small, keys[s : s + 100], top[s : s + 100]),
                                      want[s : s + 100])
        assert small.nbytes <= 200_000 + 100 * 8 * 10 * 32 + 16 * 800  # one batch's pairs at most beyond the cap
    assert small.built > len(small)  # it did start over


def test_worker_cache_keeps_one_cache_per_token_and_a_few_tokens():
    built = []

    def make(tag):
        def build():
            built.append(tag)
            return tag
        return build

    assert worker_cache("tok-a", make("a")) == "a"
    assert worker_cache("tok-a", make("again")) == "a"
    for t in "bcdef":
        worker_cache(f"tok-{t}", make(t))
    assert worker_cache("tok-a", make("a2")) == "a2"  # evicted by the models after it
    assert built == ["a", "b", "c", "d", "e", "f", "a2"]


def test_views_above_256_classes_make_their_masks_on_demand_and_classify_as_stored():
    assert stores_pairs(256) and not stores_pairs(257) and STORED_PAIRS_MAX == 256 * 255 // 2
    prompts, x, moments = random_model(6, 300, 16, n_items=3000)
    view = fit_view("v", "v_embedding", [f"c{i}" for i in range(300)], prompts, moments, MaskSettings())
    assert view.on_demand and view.masks is None
    # its moments are those a model directory gives back, so a reloaded model makes the same masks
    np.testing.assert_array_equal(view.moments.mean, moments.stored(compact=True).mean)
    methods.prepare(view, ("base", "pairwise", "roundrobin"))
    token = view._derived["pair_cache_token"]
    assert isinstance(token, str) and "coefficients" not in view._derived
    stored = pair_masks(view.moments, MaskSettings())
    stored = type(stored)(*stored.csr(), dim=16)
    coef = pair_coefficients(view.vectors64, stored)
    base = base_assign(x, view.vectors64)
    keys = np.arange(len(x), dtype=np.uint64)
    batch = methods.Batch(x, base, keys, top_candidates(base.cosines, 16))
    got, _ = methods.REGISTRY["pairwise"].predict(view, batch)
    np.testing.assert_array_equal(got, play_tournament(x, view.vectors64, stored, coef, keys, batch.top, None))
    got, _ = methods.REGISTRY["roundrobin"].predict(view, batch)
    np.testing.assert_array_equal(got, play_round_robin(x, view.vectors64, stored, coef, base.cosines, batch.top, None))
    # a copy shipped to a worker finds the same per-process cache by its token
    import pickle

    shipped = pickle.loads(pickle.dumps(view))
    assert methods.pair_cache(shipped) is methods.pair_cache(view)


def test_sampled_mask_sizes_are_those_of_the_pairs_drawn():
    prompts, _, moments = random_model(7, 50, 40)
    lengths = sample_lengths(moments, MaskSettings(), n_pairs=300)
    assert len(lengths) == 300
    stored = pair_masks(moments, MaskSettings()).lengths
    assert set(lengths.tolist()) <= set(stored.tolist())
    np.testing.assert_array_equal(lengths, sample_lengths(moments, MaskSettings(), n_pairs=300))
    assert len(sample_lengths(ClassMoments.empty(1, 4), MaskSettings())) == 0


def test_the_compiled_pair_ratios_are_cross_ratio_bit_for_bit():
    from pairspark.core import kernels
    from pairspark.core.crossvar import cross_ratio

    rng = np.random.default_rng(8)
    mean = rng.normal(size=(12, 40)) * 1e3
    variance = rng.random((12, 40)) ** 3
    variance[0] = 0.0  # zero variance: ratio inf where the means differ, 1 where they agree
    mean[1, :5] = mean[0, :5]
    variance[1, :5] = 0.0
    a, b = np.triu_indices(12, k=1)
    np.testing.assert_array_equal(kernels.pair_ratios(mean, variance, a, b),
                                  cross_ratio(mean[a], variance[a], mean[b], variance[b]))


def test_a_batch_classified_in_row_chunks_gets_the_answers_of_one_piece(monkeypatch):
    """Above CHUNK_CELLS rows x classes a batch goes through in chunks (a worker's memory at
    10,000 classes): every answer and top-k is that of the whole batch, and every published figure
    (float32, as the predictions hold them) too; in float64 a product's last bit may depend on the
    rows beside it, as between any two batchings (core/classify.py)."""
    from pairspark.core import batches
    from pairspark.core import classify as classify_module

    prompts, x, moments = random_model(9, 300, 16, n_items=1000)
    view = fit_view("v", "v_embedding", [f"c{i}" for i in range(300)], prompts, moments, MaskSettings())
    wanted = ("base", "pairwise", "gnb", "ovr")
    methods.prepare(view, wanted)
    keys = np.arange(len(x), dtype=np.uint64) * np.uint64(104729)
    whole = classify_module.classify(view, x, keys, wanted, "auto", margin_of="pairwise", k=3)
    monkeypatch.setattr(batches, "CHUNK_CELLS", 300 * 64)  # chunks of 64 rows, the last of 40
    chunked = classify_module.classify(view, x, keys, wanted, "auto", margin_of="pairwise", k=3)
    assert whole.keys() == chunked.keys()
    for key in whole:
        published = (lambda a: a.astype(np.float32)) if whole[key].dtype.kind == "f" else (lambda a: a)
        np.testing.assert_array_equal(published(chunked[key]), published(whole[key]), err_msg=key)
