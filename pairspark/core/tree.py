"""A taxonomy over the classes: the nodes, their parents, and what the answers read off it.

The classes table may carry `parent_id` (null at a root, ragged depth allowed). Every method
answers among the **leaves** (nodes without children): they are the model's classes, in the same
sorted order. The tree then turns each item's probabilities over the leaves into a **path**: the
answer leaf's ancestors, root first, each with the probability that the path is right down to
it, which is the probability mass of the leaves under that node (so it never grows with depth),
and a **back-off** node: the deepest node of the path whose probability reaches a threshold.
docs/METHOD.md "Trees" says why the evidence is summed over the leaves and not read from the
inner nodes' own prompts.

Levels are 1-based: a root is at level 1. A label may be any node; its level-k node is its
ancestor at level k, defined down to its own level.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pairspark.core.stats import ClassMoments
from pairspark.errors import UsageError


@dataclass(frozen=True, eq=False)
class Tree:
    """Nodes sorted by id, each with its parent's index (-1 at a root). Built by `Tree.of`, which
    checks the shape; `leaves` are the indices of the childless nodes in node order (= the
    model's classes: both are sorted by id)."""

    node_ids: tuple[str, ...]
    parent: np.ndarray  # (N,) int64
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @staticmethod
    def of(node_ids: list[str], parent_ids: list[str | None], what: str = "classes table") -> Tree:
        """The tree of (node, parent) rows (one per node), or a one-line UsageError: a duplicate
        node, an unknown parent, a node that is its own ancestor (a cycle)."""
        seen: set[str] = set()
        for node in node_ids:
            if node in seen:
                raise UsageError(f"{what}: node {node!r} appears with more than one parent_id row")
            seen.add(node)
        order = sorted(range(len(node_ids)), key=lambda i: node_ids[i])
        ids = tuple(node_ids[i] for i in order)
        index = {node: i for i, node in enumerate(ids)}
        parent = np.full(len(ids), -1, dtype=np.int64)
        for i in order:
            p = parent_ids[i]
            if p is None:
                continue
            if p not in index:
                raise UsageError(f"{what}: node {node_ids[i]!r} has parent_id {p!r}, which is no node of the table")
            parent[index[node_ids[i]]] = index[p]
        tree = Tree(ids, parent)
        tree.depth  # raises on a cycle
        return tree

    @property
    def n_nodes(self) -> int:
        return len(self.node_ids)

    def _derived(self, key: str, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def depth(self) -> np.ndarray:
        """(N,) int64 level of each node, 1 at a root."""
        def make() -> np.ndarray:
            depth = np.zeros(self.n_nodes, dtype=np.int64)
            for start in range(self.n_nodes):
                chain, node = [], start
                while node >= 0 and depth[node] == 0:
                    if node in chain:
                        raise UsageError(f"the class tree has a cycle through node {self.node_ids[node]!r}")
                    chain.append(node)
                    node = int(self.parent[node])
                level = 0 if node < 0 else int(depth[node])
                for member in reversed(chain):
                    level += 1
                    depth[member] = level
            return depth
        return self._derived("depth", make)

    @property
    def max_depth(self) -> int:
        return int(self.depth.max()) if self.n_nodes else 0

    @property
    def leaves(self) -> np.ndarray:
        """Indices of the nodes without children, ascending (node order)."""
        def make() -> np.ndarray:
            has_child = np.zeros(self.n_nodes, dtype=bool)
            has_child[self.parent[self.parent >= 0]] = True
            return np.flatnonzero(~has_child)
        return self._derived("leaves", make)

    @property
    def leaf_ids(self) -> list[str]:
        return [self.node_ids[i] for i in self.leaves]

    @property
    def ancestry(self) -> np.ndarray:
        """(N, max_depth) int64: row n holds n's ancestors by level (column k-1: its level-k node,
        n itself at its own level), -1 below its level."""
        def make() -> np.ndarray:
            out = np.full((self.n_nodes, max(self.max_depth, 1)), -1, dtype=np.int64)
            for n in range(self.n_nodes):
                node = n
                while node >= 0:
                    out[n, self.depth[node] - 1] = node
                    node = int(self.parent[node])
            return out
        return self._derived("ancestry", make)

    @property
    def _leaf_ranges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(order, lo, hi): the leaves in depth-first order (`order`: leaf positions) so that the
        leaves under any node are one contiguous run [lo[n], hi[n]) of that order."""
        def make():
            children: list[list[int]] = [[] for _ in range(self.n_nodes)]
            for n in range(self.n_nodes):
                if self.parent[n] >= 0:
                    children[int(self.parent[n])].append(n)
            position = {int(node): i for i, node in enumerate(self.leaves)}
            order: list[int] = []
            lo = np.zeros(self.n_nodes, dtype=np.int64)
            hi = np.zeros(self.n_nodes, dtype=np.int64)
            roots = [n for n in range(self.n_nodes) if self.parent[n] < 0]
            stack = [(n, False) for n in reversed(roots)]
            while stack:
                node, done = stack.pop()
                if done:
                    hi[node] = len(order)
                    continue
                lo[node] = len(order)
                if node in position:
                    order.append(position[node])
                    hi[node] = len(order)
                    continue
                stack.append((node, True))
                stack.extend((child, False) for child in reversed(children[node]))
            return np.asarray(order, dtype=np.int64), lo, hi
        return self._derived("leaf_ranges", make)

    def leaf_paths(self) -> np.ndarray:
        """(C, max_depth): per leaf (class index) its path's node indices by level, -1 below its depth."""
        return self.ancestry[self.leaves]

    def path_confidence(self, probs: np.ndarray, answers: np.ndarray) -> np.ndarray:
        """(n, max_depth) float64: for each row's answer leaf, the probability mass of the leaves
        under its level-k node (column k-1); NaN below the leaf's depth. Non-increasing along a
        row: each node's leaves include its children's. probs: (n, C) over the leaves."""
        order, lo, hi = self._leaf_ranges
        n = len(answers)
        cumulative = np.zeros((n, probs.shape[1] + 1), dtype=np.float64)
        np.cumsum(probs[:, order], axis=1, out=cumulative[:, 1:])
        paths = self.leaf_paths()[answers]  # (n, L)
        rows = np.arange(n)[:, None]
        node = np.where(paths >= 0, paths, 0)
        mass = cumulative[rows, hi[node]] - cumulative[rows, lo[node]]
        # rounding of the differences must not let a deeper node exceed its parent
        mass = np.minimum.accumulate(np.clip(mass, 0.0, 1.0), axis=1)
        return np.where(paths >= 0, mass, np.nan)

    def backoff(self, answers: np.ndarray, confidence: np.ndarray, at: float) -> np.ndarray:
        """(n,) node index: the deepest node of each answer's path whose path confidence is at
        least `at`, -1 where not even its root reaches it."""
        paths = self.leaf_paths()[answers]
        reached = (confidence >= at) & (paths >= 0)
        deepest = np.where(reached.any(axis=1), reached.shape[1] - 1 - np.argmax(reached[:, ::-1], axis=1), -1)
        return np.where(deepest >= 0, paths[np.arange(len(answers)), np.maximum(deepest, 0)], -1)


def tree_metrics(tree: Tree, cells: dict[tuple[str, str], int]) -> dict:
    """Hierarchical figures of answers against labels from their (label, answer) cell counts
    (answer: a node id, usually a leaf; None for no answer; a label that is no node is left out
    and counted). Per level k: accuracy over the items labelled to level k or deeper (the answer's
    level-k node is the label's); hierarchical precision, recall and F1 (Kiritchenko et al.: the
    answer's and the label's ancestor sets, each node included, summed over items); `exact`: the
    answer is the label node itself."""
    index = {node: i for i, node in enumerate(tree.node_ids)}
    levels = tree.max_depth
    right = np.zeros(levels)
    labelled = np.zeros(levels)
    overlap = predicted = truth = 0
    items = exact = unknown = 0
    for (label, answer), n in cells.items():
        if label is None:
            continue
        if label not in index:
            unknown += n
            continue
        items += n
        t = tree.ancestry[index[label]]
        p = tree.ancestry[index[answer]] if answer in index else np.full(levels, -1)
        t_set, p_set = set(t[t >= 0].tolist()), set(p[p >= 0].tolist())
        overlap += n * len(t_set & p_set)
        predicted += n * len(p_set)
        truth += n * len(t_set)
        exact += n * (answer == label)
        for k in range(levels):
            if t[k] >= 0:
                labelled[k] += n
                right[k] += n * (p[k] == t[k])
    hp = overlap / predicted if predicted else 0.0
    hr = overlap / truth if truth else 0.0
    return {
        "items": items,
        "labels_not_nodes": unknown,
        "by_level": {str(k + 1): {"items": int(labelled[k]), "accuracy": float(right[k] / labelled[k]) if labelled[k] else None}
                     for k in range(levels)},
        "hierarchical_precision": hp,
        "hierarchical_recall": hr,
        "hierarchical_f1": 2 * hp * hr / (hp + hr) if hp + hr else 0.0,
        "exact": exact / items if items else 0.0,
    }


def backoff_metrics(tree: Tree, cells: dict[tuple[str, str | None], int]) -> dict:
    """Back-off answers against labels from (label, back-off node or None) cell counts. A back-off
    node is right when it is the label or one of its ancestors, or, below a label that stops
    above the leaves, one of its descendants (the label says nothing finer). Per depth d of the
    back-off: `coverage` (share of the labelled items answered at depth d) and `precision`;
    `none`: the share with no back-off at all."""
    index = {node: i for i, node in enumerate(tree.node_ids)}
    levels = tree.max_depth
    answered = np.zeros(levels)
    right = np.zeros(levels)
    items = none = 0
    for (label, node), n in cells.items():
        if label is None or label not in index:
            continue
        items += n
        if node is None or node not in index:
            none += n
            continue
        b, t = index[node], index[label]
        d = int(tree.depth[b])
        shared = min(d, int(tree.depth[t]))
        answered[d - 1] += n
        right[d - 1] += n * (tree.ancestry[b, shared - 1] == tree.ancestry[t, shared - 1])
    return {
        "items": items,
        "none": none / items if items else 0.0,
        "by_depth": {str(d + 1): {"coverage": answered[d] / items if items else 0.0,
                                  "precision": float(right[d] / answered[d]) if answered[d] else None,
                                  "items": int(answered[d])} for d in range(levels)},
    }


def level_agreement(tree: Tree, cells: dict[tuple[str, str], int]) -> dict[str, float | None]:
    """Per level k, the share of items whose two answers (node ids, cell counts) have the same
    level-k node, over the items where both reach level k."""
    index = {node: i for i, node in enumerate(tree.node_ids)}
    same = np.zeros(tree.max_depth)
    both = np.zeros(tree.max_depth)
    for (a, b), n in cells.items():
        if a not in index or b not in index:
            continue
        x, y = tree.ancestry[index[a]], tree.ancestry[index[b]]
        reach = (x >= 0) & (y >= 0)
        both += n * reach
        same += n * (reach & (x == y))
    return {str(k + 1): float(same[k] / both[k]) if both[k] else None for k in range(tree.max_depth)}


def sibling_ancestors(tree: Tree, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For leaves a[i] != b[i] (class indices): the two siblings whose subtrees hold them, the
    children of their lowest common ancestor on each side (two roots when they share none; the
    leaves themselves when they are siblings). Node indices."""
    paths = tree.leaf_paths()
    pa_, pb = paths[np.asarray(a, np.int64)], paths[np.asarray(b, np.int64)]
    level = np.argmax(pa_ != pb, axis=1)  # a leaf is no ancestor of another: they part at some level
    rows = np.arange(len(level))
    return pa_[rows, level], pb[rows, level]


def node_moments(tree: Tree, leaves: ClassMoments) -> ClassMoments:
    """Moments of every node (rows in node order) over the items of the leaves under it: a leaf's
    row is its own, bit for bit; an inner node's pools its leaves (count-weighted mean, and m2 the
    leaves' m2 plus their squared offsets from the pooled mean)."""
    order, lo, hi = tree._leaf_ranges
    count = np.zeros(tree.n_nodes, np.int64)
    mean = np.zeros((tree.n_nodes, leaves.dim))
    m2 = np.zeros((tree.n_nodes, leaves.dim))
    for node in range(tree.n_nodes):
        under = order[lo[node]:hi[node]]
        if len(under) == 1 and tree.leaves[under[0]] == node:
            count[node], mean[node], m2[node] = leaves.count[under[0]], leaves.mean[under[0]], leaves.m2[under[0]]
            continue
        n = leaves.count[under].astype(np.float64)
        total = n.sum()
        count[node] = int(total)
        if total == 0:
            continue
        mean[node] = (n[:, None] * leaves.mean[under]).sum(axis=0) / total
        offset = leaves.mean[under] - mean[node]
        m2[node] = leaves.m2[under].sum(axis=0) + (n[:, None] * offset * offset).sum(axis=0)
    return ClassMoments(count, mean, m2)
