import numpy as np
import pytest

from pairspark.core.cosine import top_candidates
from pairspark.core.masks import PairMasks, class_pairs
from pairspark.core.tournament import (
    AUTO_CANDIDATES,
    resolve_candidates,
    pair_coefficients,
    pair_index,
    pair_weights,
    play_tournament,
    splitmix64,
)
from tests.reference import normalize_rows, bracket_draws, shuffle_survivors, masks_from_lists


def play(x, classes, masks, keys, candidates=None):
    packed = masks_from_lists(masks)
    return play_tournament(x, classes, packed, pair_coefficients(classes, packed), keys, candidates)


def masked_cosine(x, t, dims):
    xm, tm = x[dims], t[dims]
    return float(xm @ tm / (np.linalg.norm(xm) * np.linalg.norm(tm)))


def reference_tournament(x, class_vectors, masks, item_key, candidates=None):
    """One item, plain Python: shuffle, pair off, the higher masked cosine wins, byes for the odd one."""
    dims_of = {tuple(p): m for p, m in zip(class_pairs(len(class_vectors)).tolist(), masks)}
    survivors = list(range(len(class_vectors))) if candidates is None else sorted(candidates)
    round_index = 0
    while len(survivors) > 1:
        shuffled = shuffle_survivors(survivors, item_key, round_index)
        nxt = []
        for i in range(0, len(shuffled) - 1, 2):
            a, b = sorted(shuffled[i : i + 2])
            dims = dims_of[(a, b)]
            ca, cb = masked_cosine(x, class_vectors[a], dims), masked_cosine(x, class_vectors[b], dims)
            nxt.append(a if ca >= cb else b)
        if len(shuffled) % 2:
            nxt.append(shuffled[-1])
        survivors = nxt
        round_index += 1
    return survivors[0]


def random_problem(rng, n, d, c):
    x = rng.normal(size=(n, d))
    classes = normalize_rows(rng.normal(size=(c, d)))
    # at least 2 dims: on a single dim both masked cosines are +-1, an exact tie decided by rounding
    masks = [np.sort(rng.choice(d, size=rng.integers(2, d + 1), replace=False)).astype(np.int32) for _ in class_pairs(c)]
    keys = rng.integers(0, 2**63, size=n, dtype=np.int64).view(np.uint64)
    return x, classes, masks, keys


@pytest.mark.parametrize("n_classes", [2, 3, 5, 8, 13])
def test_vectorised_tournament_equals_a_per_item_loop(n_classes):
    rng = np.random.default_rng(n_classes)
    x, classes, masks, keys = random_problem(rng, 300, 12, n_classes)
    got = play(x, classes, masks, keys)
    expected = [reference_tournament(x[i], classes, masks, keys[i]) for i in range(len(x))]
    assert got.tolist() == expected


@pytest.mark.parametrize("k", [2, 3, 5])
def test_top_k_candidate_brackets_equal_a_per_item_loop_over_the_k_best(k):
    rng = np.random.default_rng(k)
    x, classes, masks, keys = random_problem(rng, 200, 12, 8)
    unit = normalize_rows(x)
    cosines = unit @ classes.T
    top = top_candidates(cosines, k)
    for row, c in zip(top, cosines):  # the k best by cosine, listed in class order
        assert row.tolist() == sorted(np.argsort(-c)[:k].tolist())
    got = play(unit, classes, masks, keys, top)
    expected = [reference_tournament(unit[i], classes, masks, keys[i], top[i].tolist()) for i in range(len(x))]
    assert got.tolist() == expected
    assert play(unit, classes, masks, keys, top_candidates(cosines, 8)).tolist() == play(unit, classes, masks, keys).tolist()


def test_answers_follow_the_item_not_its_position_or_batch():
    rng = np.random.default_rng(5)
    x, classes, masks, keys = random_problem(rng, 200, 10, 7)
    whole = play(x, classes, masks, keys)
    perm = rng.permutation(200)
    assert play(x[perm], classes, masks, keys[perm]).tolist() == whole[perm].tolist()
    assert np.concatenate([play(x[i : i + 7], classes, masks, keys[i : i + 7]) for i in range(0, 200, 7)]).tolist() == whole.tolist()


def test_pair_index_follows_class_pairs():
    for c in (2, 3, 7, 50):
        pairs = class_pairs(c)
        assert pair_index(pairs[:, 0], pairs[:, 1], c).tolist() == list(range(len(pairs)))


def test_splitmix64_matches_the_published_reference_values():
    # splitmix64 stream from seed 1234567 (Vigna's reference C code): state += golden; mix(state)
    assert int(splitmix64(np.uint64(1234567))) == 6457827717110365317
    assert int(splitmix64(np.uint64(1234567) + np.uint64(0x9E3779B97F4A7C15))) == 3203168211198807973


def test_pair_coefficients_are_inverse_masked_norms():
    rng = np.random.default_rng(4)
    x, classes, masks, _ = random_problem(rng, 1, 9, 6)
    classes[2, masks[1]] = 0.0  # pair (0, 2) is masks[1]: class 2 is zero there
    coef = pair_coefficients(classes, masks_from_lists(masks))
    for p, (a, b) in enumerate(class_pairs(6)):
        for side, c in enumerate((a, b)):
            norm = np.linalg.norm(classes[c, masks[p]])
            assert coef[p, side] == pytest.approx(1 / norm if norm > 0 else 0.0, rel=1e-12)
    assert coef[1, 1] == 0.0


def test_brackets_differ_between_items_and_every_class_can_win():
    # every class wins the items built to favour it (near its prompt vector), on random masks, as
    # the per-item reference says
    rng = np.random.default_rng(11)
    c, per_class = 6, 40
    _, classes, masks, _ = random_problem(rng, 1, 12, c)
    favoured = np.repeat(np.arange(c), per_class)
    x = 5 * classes[favoured] + 0.05 * rng.normal(size=(len(favoured), 12))
    keys = rng.integers(0, 2**63, size=len(favoured), dtype=np.int64).view(np.uint64)
    winners = play(x, classes, masks, keys)
    assert winners.tolist() == [reference_tournament(x[i], classes, masks, keys[i]) for i in range(len(x))]
    assert winners.tolist() == favoured.tolist()

    # identical items and a cycle (0 beats 1 on dims 0-1, 1 beats 2 on dims 4-5, 2 beats 0 on
    # dims 2-3): only the bracket decides, and it differs between items, so every class wins some;
    # with three classes the one given the round-0 bye wins
    cycle = normalize_rows(np.array([[1, 1, 1, -1, 0, 0], [1, -1, 0, 0, 1, 1], [0, 0, 1, 1, 1, -1]], float))
    cycle_masks = [np.array(d, dtype=np.int32) for d in ([0, 1], [2, 3], [4, 5])]  # pairs (0,1), (0,2), (1,2)
    n = 600
    same = np.ones((n, 6))
    keys = np.arange(n, dtype=np.uint64) * np.uint64(2654435761)
    winners = play(same, cycle, cycle_masks, keys)
    assert winners.tolist() == [reference_tournament(same[i], cycle, cycle_masks, keys[i]) for i in range(n)]
    assert winners.tolist() == [shuffle_survivors([0, 1, 2], int(k), 0)[-1] for k in keys]
    assert np.bincount(winners, minlength=3).min() > n / 3 * 0.8

    keys = np.arange(2000, dtype=np.uint64) * np.uint64(2654435761)
    first = [shuffle_survivors(list(range(c)), int(k), 0)[0] for k in keys]
    counts = np.bincount(first, minlength=c)
    assert counts.min() > len(keys) / c * 0.8  # the first slot of round 0 is roughly uniform over classes
    assert len(set(bracket_draws(7, 0, 5).tolist())) == 5 and not np.array_equal(bracket_draws(7, 0, 5), bracket_draws(7, 1, 5))


def test_ties_go_to_the_lower_class_index():
    # identical items, equal-strength classes: every match is a tie, which the lower index wins,
    # so class 0 wins every bracket, as in the per-item reference
    n, c = 2000, 6
    x = np.ones((n, 4))
    classes = normalize_rows(np.ones((c, 4)))
    masks = [np.arange(4, dtype=np.int32) for _ in class_pairs(c)]
    keys = np.arange(n, dtype=np.uint64) * np.uint64(2654435761)
    winners = play(x, classes, masks, keys)
    assert set(winners.tolist()) == {0}
    assert [reference_tournament(x[i], classes, masks, keys[i]) for i in range(n)] == winners.tolist()


def test_a_single_dominant_class_wins_every_bracket():
    rng = np.random.default_rng(2)
    classes = normalize_rows(rng.normal(size=(9, 16)))
    x = classes[4] * 10 + 0.01 * rng.normal(size=(100, 16))
    masks = [np.arange(16, dtype=np.int32) for _ in class_pairs(9)]
    keys = rng.integers(0, 2**63, 100, dtype=np.int64).view(np.uint64)
    assert set(play(x, classes, masks, keys).tolist()) == {4}


def test_a_condorcet_winner_always_wins_and_without_one_the_bracket_decides():
    # random masks make matches intransitive; per item, many keys
    rng = np.random.default_rng(9)
    x, classes, masks, _ = random_problem(rng, 30, 12, 9)
    keys = rng.integers(0, 2**63, 300, dtype=np.int64).view(np.uint64)
    pairs = class_pairs(9).tolist()
    without_winner = 0
    for row in x:
        beats = np.zeros((9, 9), bool)
        for (a, b), dims in zip(pairs, masks):
            a_wins = masked_cosine(row, classes[a], dims) >= masked_cosine(row, classes[b], dims)
            beats[a, b], beats[b, a] = a_wins, not a_wins
        condorcet = [c for c in range(9) if beats[c].sum() == 8]
        winners = set(play(np.repeat(row[None], 300, axis=0), classes, masks, keys).tolist())
        if condorcet:
            assert winners == set(condorcet)
        else:
            without_winner += 1
            assert len(winners) > 1
    assert without_winner > 0


def test_unit_rows_are_float64_and_do_not_depend_on_the_batch():
    from pairspark.core.cosine import unit_rows64

    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 33)).astype(np.float32)
    x[7] = 0
    got = unit_rows64(x)
    np.testing.assert_allclose(got, normalize_rows(x.astype(np.float64)), rtol=1e-14, atol=1e-15)
    assert not got[7].any() and got.dtype == np.float64
    np.testing.assert_array_equal(unit_rows64(x[10:20]), got[10:20])  # a row does not depend on its batch


@pytest.mark.parametrize("n_classes", [3, 8, 13])
def test_the_bit_form_of_the_masks_plays_the_same_tournament(n_classes):
    rng = np.random.default_rng(40 + n_classes)
    x, classes, masks, keys = random_problem(rng, 200, 70, n_classes)  # 70 dims: two words per mask
    csr = masks_from_lists(masks)
    bits = csr.compact(70, limit=0)
    assert bits.is_bits and not csr.is_bits
    assert bits.lengths.tolist() == csr.lengths.tolist() == [len(m) for m in masks]
    assert all(np.array_equal(a, b) for a, b in zip(bits, masks))
    indptr, dims = bits.csr()
    assert np.array_equal(indptr, csr.indptr) and np.array_equal(dims, csr.dims)
    coef = pair_coefficients(classes, csr)
    np.testing.assert_array_equal(pair_coefficients(classes, bits), coef)
    got = play_tournament(x, classes, bits, coef, keys)
    assert got.tolist() == play_tournament(x, classes, csr, coef, keys).tolist()
    assert got.tolist() == [reference_tournament(x[i], classes, masks, keys[i]) for i in range(len(x))]


@pytest.mark.parametrize("n_classes", [2, 7, 13])
def test_stored_pair_weights_play_the_same_tournament_bit_for_bit(n_classes):
    rng = np.random.default_rng(60 + n_classes)
    x, classes, masks, keys = random_problem(rng, 300, 33, n_classes)
    csr = masks_from_lists(masks)
    coef = pair_coefficients(classes, csr)
    weights = pair_weights(classes, csr, coef)
    for p, (a, b) in enumerate(class_pairs(n_classes)):
        dims = csr.dims[csr.indptr[p]:csr.indptr[p + 1]]
        np.testing.assert_array_equal(weights[csr.indptr[p]:csr.indptr[p + 1]],
                                      classes[a, dims] * coef[p, 0] - classes[b, dims] * coef[p, 1])
    got = play_tournament(x, classes, csr, coef, keys, weights=weights)
    assert got.tolist() == play_tournament(x, classes, csr, coef, keys).tolist()
    assert got.tolist() == [reference_tournament(x[i], classes, masks, keys[i]) for i in range(len(x))]


def test_pair_weights_are_not_stored_for_bit_masks_or_above_the_limit():
    rng = np.random.default_rng(3)
    _, classes, masks, _ = random_problem(rng, 2, 70, 5)
    csr = masks_from_lists(masks)
    coef = pair_coefficients(classes, csr)
    assert pair_weights(classes, csr.compact(70, limit=0), coef) is None
    assert pair_weights(classes, csr, coef, limit_bytes=len(csr.dims) * 8 - 1) is None
    assert len(pair_weights(classes, csr, coef, limit_bytes=len(csr.dims) * 8)) == len(csr.dims)


def test_a_view_ships_without_its_stored_weights_and_rebuilds_them_where_it_classifies():
    import pickle

    from pairspark.core.methods import stored_weights
    from tests.synthetic import tiny_view_model

    view = tiny_view_model("v", "col", 6, 4)
    built = stored_weights(view)
    assert built is not None and len(built) == len(view.masks.dims)
    shipped = pickle.loads(pickle.dumps(view))
    assert not shipped._local
    np.testing.assert_array_equal(stored_weights(shipped), built)


def test_auto_candidates_is_the_full_bracket_up_to_64_classes_then_the_top_16():
    assert resolve_candidates("auto", 4) == 0
    assert resolve_candidates("auto", 64) == 0
    assert resolve_candidates("auto", 65) == AUTO_CANDIDATES == 16
    assert resolve_candidates(8, 1000) == 8
    assert resolve_candidates(0, 1000) == 0


@pytest.mark.parametrize("n_classes, want", [(64, None), (70, 16)])
def test_a_view_model_brackets_auto_as_resolved(monkeypatch, n_classes, want):
    from pairspark.core import classify
    from tests.synthetic import tiny_view_model

    asked = []
    real = classify.top_candidates
    monkeypatch.setattr(classify, "top_candidates", lambda cosines, k: asked.append(k) or real(cosines, k))
    view = tiny_view_model("v", "c", 72, n_classes)
    x = np.random.default_rng(0).normal(size=(5, 72))
    classify.classify(view, x, np.arange(5, dtype=np.uint64), ("base", "pairwise"), "auto")
    assert asked == ([] if want is None else [want])

