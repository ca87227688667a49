"""core/tree.py: parsing and its errors, paths, path confidence, back-off and the hierarchical
metrics, against hand-computed cases and brute force on random trees."""

import numpy as np
import pytest

from pairspark.core.tree import Tree, backoff_metrics, tree_metrics
from pairspark.errors import UsageError

# A > A1 (leaf), A > A2 > {A2x, A2y}; B > B1: ragged depth, two roots
NODES = ["B1", "A2y", "A", "A1", "A2", "A2x", "B"]
PARENTS = ["B", "A2", None, "A", "A", "A2", None]


def small():
    return Tree.of(NODES, PARENTS)


def test_a_tree_sorts_its_nodes_and_knows_depths_leaves_and_paths():
    t = small()
    assert t.node_ids == ("A", "A1", "A2", "A2x", "A2y", "B", "B1")
    assert t.depth.tolist() == [1, 2, 2, 3, 3, 1, 2]
    assert t.leaf_ids == ["A1", "A2x", "A2y", "B1"]
    names = [[t.node_ids[n] for n in row if n >= 0] for row in t.leaf_paths()]
    assert names == [["A", "A1"], ["A", "A2", "A2x"], ["A", "A2", "A2y"], ["B", "B1"]]


@pytest.mark.parametrize("nodes, parents, message", [
    (["a", "b", "a"], [None, "a", None], "node 'a' appears with more than one parent_id row"),
    (["a", "b"], [None, "z"], "node 'b' has parent_id 'z', which is no node of the table"),
    (["r", "a", "b"], [None, "b", "a"], "cycle through node"),
    (["a"], ["a"], "cycle through node 'a'"),
])
def test_bad_trees_are_one_line_errors(nodes, parents, message):
    with pytest.raises(UsageError, match=message):
        Tree.of(nodes, parents)


def test_path_confidence_is_the_mass_under_each_node_and_back_off_the_deepest_above_the_threshold():
    t = small()
    probs = np.array([[0.1, 0.5, 0.2, 0.2], [0.05, 0.05, 0.0, 0.9]])
    answers = np.array([1, 3])
    conf = t.path_confidence(probs, answers)
    np.testing.assert_allclose(conf[0], [0.8, 0.7, 0.5])
    np.testing.assert_allclose(conf[1, :2], [0.9, 0.9])
    assert np.isnan(conf[1, 2])
    for at, expected in ((0.75, ["A", "B1"]), (0.5, ["A2x", "B1"]), (0.85, [None, "B1"]), (0.95, [None, None])):
        got = t.backoff(answers, conf, at)
        assert [t.node_ids[n] if n >= 0 else None for n in got] == expected, at


def random_tree(rng, n_roots=3, fanout=(1, 4), depth=4):
    nodes, parents, frontier = [], [], []
    for r in range(n_roots):
        nodes.append(f"r{r}"); parents.append(None); frontier.append((f"r{r}", 1))
    while frontier:
        node, d = frontier.pop()
        if d >= depth or rng.random() < 0.25:
            continue
        for c in range(rng.integers(*fanout)):
            child = f"{node}.{c}"
            nodes.append(child); parents.append(node); frontier.append((child, d + 1))
    order = rng.permutation(len(nodes))
    return Tree.of([nodes[i] for i in order], [parents[i] for i in order])


def test_paths_are_paths_of_the_tree_and_confidences_match_brute_force_on_random_trees():
    rng = np.random.default_rng(4)
    for _ in range(20):
        t = random_tree(rng)
        leaves = t.leaves
        probs = rng.dirichlet(np.ones(len(leaves)), size=50)
        answers = rng.integers(0, len(leaves), size=50)
        conf = t.path_confidence(probs, answers)
        at = float(rng.uniform(0.2, 0.9))
        back = t.backoff(answers, conf, at)
        for i, a in enumerate(answers):
            path = [n for n in t.leaf_paths()[a] if n >= 0]
            assert path[-1] == leaves[a] and t.parent[path[0]] == -1
            assert all(t.parent[child] == parent for parent, child in zip(path, path[1:]))
            for k, node in enumerate(path):  # brute force: the leaves whose ancestry holds the node
                under = [j for j, leaf in enumerate(leaves) if node in t.ancestry[leaf]]
                assert conf[i, k] == pytest.approx(probs[i, under].sum(), abs=1e-12)
            assert np.all(np.diff(conf[i, : len(path)]) <= 0)
            reached = [node for k, node in enumerate(path) if conf[i, k] >= at]
            assert back[i] == (reached[-1] if reached else -1)


def test_tree_metrics_by_hand():
    t = small()
    cells = {("A2y", "A2x"): 2, ("A", "A1"): 1, ("B1", "B1"): 1, (None, "A1"): 5, ("nowhere", "A1"): 3}
    m = tree_metrics(t, cells)
    assert m["items"] == 4 and m["labels_not_nodes"] == 3
    assert m["by_level"]["1"] == {"items": 4, "accuracy": 1.0}
    assert m["by_level"]["2"] == {"items": 3, "accuracy": 1.0}
    assert m["by_level"]["3"] == {"items": 2, "accuracy": 0.0}
    # overlaps 2*2 + 1 + 2 = 7; predicted 2*3 + 2 + 2 = 10; truth 2*3 + 1 + 2 = 9
    assert m["hierarchical_precision"] == pytest.approx(0.7)
    assert m["hierarchical_recall"] == pytest.approx(7 / 9)
    assert m["hierarchical_f1"] == pytest.approx(2 * 0.7 * (7 / 9) / (0.7 + 7 / 9))
    assert m["exact"] == 0.25


def test_back_off_metrics_by_hand():
    t = small()
    cells = {("A2y", "A2"): 3, ("A", "A2x"): 1, ("B1", "A"): 1, ("A1", None): 2, ("A2x", "A2y"): 1}
    m = backoff_metrics(t, cells)
    assert m["items"] == 8 and m["none"] == 0.25
    assert m["by_depth"]["1"] == {"coverage": 1 / 8, "precision": 0.0, "items": 1}
    assert m["by_depth"]["2"] == {"coverage": 3 / 8, "precision": 1.0, "items": 3}
    assert m["by_depth"]["3"] == {"coverage": 2 / 8, "precision": 0.5, "items": 2}


def test_level_agreement_by_hand():
    from pairspark.core.tree import level_agreement

    t = small()
    got = level_agreement(t, {("A2x", "A2y"): 2, ("A1", "A2x"): 1, ("B1", "A1"): 1, ("A2x", None): 4})
    assert got == {"1": 0.75, "2": 2 / 4, "3": 0.0}


def tree_model(seed=5):
    """A random tree, unit prompts for its leaves and the moments of items assigned to them by cosine."""
    from pairspark.core.stats import ClassMoments

    rng = np.random.default_rng(seed)
    t = random_tree(rng, n_roots=3, fanout=(2, 4), depth=3)
    n_leaves, dim = len(t.leaves), 12
    prompts = rng.normal(size=(n_leaves, dim))
    prompts /= np.linalg.norm(prompts, axis=1, keepdims=True)
    x = rng.normal(size=(800, dim)) + 2 * prompts[rng.integers(0, n_leaves, 800)]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.argmax(x @ prompts.T, axis=1)
    labels[labels == 0] = 1  # leaf 0 has no item: its pairs (and its subtree's, if alone) keep every dim
    return t, prompts, x, labels, ClassMoments.from_batch(x, labels, n_leaves)


def test_node_moments_pool_the_items_of_each_subtree():
    from pairspark.core.tree import node_moments

    t, _, x, labels, leaves = tree_model()
    nodes = node_moments(t, leaves)
    for n in range(t.n_nodes):
        under = [j for j, leaf in enumerate(t.leaves) if n in t.ancestry[leaf]]
        rows = x[np.isin(labels, under)]
        assert nodes.count[n] == len(rows)
        if t.n_nodes and n in t.leaves:  # a leaf's row is its own, bit for bit
            j = int(np.searchsorted(t.leaves, n))
            assert np.array_equal(nodes.mean[n], leaves.mean[j]) and np.array_equal(nodes.m2[n], leaves.m2[j])
        if len(rows):
            np.testing.assert_allclose(nodes.mean[n], rows.mean(axis=0), atol=1e-12)
            np.testing.assert_allclose(nodes.m2[n], ((rows - rows.mean(axis=0)) ** 2).sum(axis=0), atol=1e-9)


def test_sibling_masks_are_the_flat_masks_of_the_siblings_and_the_tree_tournament_plays_them():
    """A TreePairCache masks each pair of leaves by the two siblings that hold them: for sibling
    leaves, their flat mask bit for bit (masks.pair_masks on the leaves); otherwise the flat mask
    of the two sibling subtrees (masks.pair_masks on the nodes' pooled moments). The on-demand
    tournament on it equals the stored tournament (core/tournament.py) given those masks."""
    from pairspark.core.masks import MaskSettings, PairMasks, class_pairs, pair_masks
    from pairspark.core.ondemand import play_tournament_ondemand
    from pairspark.core.pair_cache import TreePairCache
    from pairspark.core.tournament import pair_coefficients, pair_index, play_tournament
    from pairspark.core.tree import node_moments

    t, prompts, x, _, leaves = tree_model()
    settings = MaskSettings(ratio_threshold=1.1, min_dims=3)
    cache = TreePairCache(prompts, t, leaves, settings)
    flat = pair_masks(leaves, settings)
    by_node = pair_masks(node_moments(t, leaves), settings)
    pairs = class_pairs(len(t.leaves))
    slots = cache.slots(pairs[:, 0], pairs[:, 1])
    siblings = 0
    keep = np.zeros((len(pairs), prompts.shape[1]), dtype=bool)
    for (a, b), slot in zip(pairs, slots):
        got = cache.dims[cache.starts[slot]:cache.ends[slot]]
        la, lb = int(t.leaves[a]), int(t.leaves[b])
        if t.parent[la] == t.parent[lb]:
            siblings += 1
            np.testing.assert_array_equal(got, flat[pair_index(a, b, len(t.leaves))])
        path_a, path_b = t.ancestry[la], t.ancestry[lb]
        k = int(np.argmax(path_a != path_b))
        na, nb = sorted((int(path_a[k]), int(path_b[k])))
        assert t.parent[na] == t.parent[nb]  # the mask is a sibling pair's
        np.testing.assert_array_equal(got, by_node[pair_index(na, nb, t.n_nodes)])
        keep[pair_index(a, b, len(t.leaves)), got] = True
    assert siblings and siblings < len(pairs)
    masks = PairMasks.from_keep(iter([keep])).compact(prompts.shape[1])
    keys = np.random.default_rng(1).integers(0, 2**63, size=len(x)).view(np.uint64)
    want = play_tournament(x, prompts, masks, pair_coefficients(prompts, masks), keys)
    np.testing.assert_array_equal(play_tournament_ondemand(x, TreePairCache(prompts, t, leaves, settings), keys), want)
