import numpy as np
import pytest

from pairspark.core import tournament
from pairspark.core.cosine import normalize_rows
from pairspark.core.masks import class_pairs
from pairspark.core.tournament import bracket_keys, pair_weights, play_tournament


def masked_cosine(x, t, dims):
    xm, tm = x[dims], t[dims]
    return float(xm @ tm / (np.linalg.norm(xm) * np.linalg.norm(tm)))


def reference_tournament(x, class_vectors, masks, item_key):
    """One item, plain Python: shuffle, pair off, the higher masked cosine wins, byes for the odd one."""
    dims_of = {tuple(p): m for p, m in zip(class_pairs(len(class_vectors)).tolist(), masks)}
    survivors = list(range(len(class_vectors)))
    round_index = 0
    while len(survivors) > 1:
        keys = bracket_keys(np.array([item_key], np.uint64), round_index, len(survivors))[0]
        shuffled = [survivors[i] for i in np.argsort(keys, kind="stable")]
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
    masks = [np.sort(rng.choice(d, size=rng.integers(1, d + 1), replace=False)).astype(np.int32) for _ in class_pairs(c)]
    keys = rng.integers(0, 2**63, size=n, dtype=np.int64).view(np.uint64)
    return x, classes, masks, keys


@pytest.mark.parametrize("n_classes", [2, 3, 5, 8, 13])
def test_vectorised_tournament_equals_a_per_item_loop(n_classes):
    rng = np.random.default_rng(n_classes)
    x, classes, masks, keys = random_problem(rng, 300, 12, n_classes)
    got = play_tournament(x, pair_weights(classes, masks), keys, n_classes)
    expected = [reference_tournament(x[i], classes, masks, keys[i]) for i in range(len(x))]
    assert got.tolist() == expected


def test_answers_follow_the_item_not_its_position_or_chunk(monkeypatch):
    rng = np.random.default_rng(5)
    x, classes, masks, keys = random_problem(rng, 200, 10, 7)
    w = pair_weights(classes, masks)
    whole = play_tournament(x, w, keys, 7)
    perm = rng.permutation(200)
    assert play_tournament(x[perm], w, keys[perm], 7).tolist() == whole[perm].tolist()
    monkeypatch.setattr(tournament, "_SCORE_BLOCK_ELEMENTS", 21 * 7)  # 7-item chunks
    assert play_tournament(x, w, keys, 7).tolist() == whole.tolist()


def test_brackets_differ_between_items_and_every_class_can_win():
    # identical items, equal-strength classes: only the bracket decides, so winners spread out
    n, c = 2000, 6
    x = np.ones((n, 4))
    classes = normalize_rows(np.ones((c, 4)))
    masks = [np.arange(4, dtype=np.int32) for _ in class_pairs(c)]
    keys = np.arange(n, dtype=np.uint64) * np.uint64(2654435761)
    winners = play_tournament(x, pair_weights(classes, masks), keys, c)
    # ties go to the lower index, so class 0 wins whenever it meets anyone: it always wins here
    assert set(winners.tolist()) == {0}
    counts = np.bincount(np.argsort(bracket_keys(keys, 0, c), axis=1)[:, 0], minlength=c)
    assert counts.min() > n / c * 0.7  # first slot of round 0 is roughly uniform over classes


def test_a_single_dominant_class_wins_every_bracket():
    rng = np.random.default_rng(2)
    classes = normalize_rows(rng.normal(size=(9, 16)))
    x = classes[4] * 10 + 0.01 * rng.normal(size=(100, 16))
    masks = [np.arange(16, dtype=np.int32) for _ in class_pairs(9)]
    keys = rng.integers(0, 2**63, 100, dtype=np.int64).view(np.uint64)
    assert set(play_tournament(x, pair_weights(classes, masks), keys, 9).tolist()) == {4}


def test_with_intransitive_matches_the_bracket_decides_and_keys_change_it():
    # random masks make matches intransitive; one item, many keys: several classes must win
    rng = np.random.default_rng(9)
    x, classes, masks, _ = random_problem(rng, 1, 12, 9)
    keys = rng.integers(0, 2**63, 400, dtype=np.int64).view(np.uint64)
    winners = play_tournament(np.repeat(x, 400, axis=0), pair_weights(classes, masks), keys, 9)
    assert len(set(winners.tolist())) > 1
