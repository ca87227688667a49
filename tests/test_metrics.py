import numpy as np

from pairspark.core.metrics import metrics_from_confusion


def confusion_matrix(y_true, y_pred, n_classes):
    """(C, C) counts, rows = reference, columns = predicted (the test's own, by bincount)."""
    flat = np.asarray(y_true, np.int64) * n_classes + np.asarray(y_pred, np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def brute_metrics(y_true, y_pred, classes):
    """Weighted and macro F1 from their definitions, class by class."""
    f1s, weights = [], []
    for c in classes:
        tp = sum(t == c and p == c for t, p in zip(y_true, y_pred))
        pred = sum(p == c for p in y_pred)
        sup = sum(t == c for t in y_true)
        prec = tp / pred if pred else 0.0
        rec = tp / sup if sup else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        if pred or sup:
            f1s.append(f1)
        weights.append((f1, sup))
    weighted = sum(f * s for f, s in weights) / len(y_true)
    return weighted, sum(f1s) / len(f1s), sum(t == p for t, p in zip(y_true, y_pred)) / len(y_true)


def test_metrics_match_their_definitions_on_random_labels():
    rng = np.random.default_rng(0)
    for _ in range(20):
        k = int(rng.integers(2, 7))
        y_true = rng.integers(0, k, 200)
        y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, k, 200))
        m = metrics_from_confusion(confusion_matrix(y_true, y_pred, k + 1), [str(i) for i in range(k + 1)])
        weighted, macro, acc = brute_metrics(y_true.tolist(), y_pred.tolist(), list(range(k + 1)))
        assert abs(m["weighted_f1"] - weighted) < 1e-12
        assert abs(m["macro_f1"] - macro) < 1e-12
        assert abs(m["accuracy"] - acc) < 1e-12
        assert m["per_class"][str(k)]["support"] == 0  # the unused class is reported, not averaged


def test_perfect_agreement_scores_one():
    y = np.array([0, 1, 2, 2, 1])
    m = metrics_from_confusion(confusion_matrix(y, y, 3), ["a", "b", "c"])
    assert m["weighted_f1"] == m["macro_f1"] == m["accuracy"] == 1.0
    assert m["confusion"] == [[1, 0, 0], [0, 2, 0], [0, 0, 2]]


def test_metrics_from_cells_are_those_of_the_dense_matrix_and_hold_no_matrix_above_the_cap():
    from pairspark.core.metrics import DENSE_CONFUSION_MAX, confusion_of, metrics_from_cells

    rng = np.random.default_rng(1)
    for k in (5, DENSE_CONFUSION_MAX + 1, 2000):
        y_true = rng.integers(0, k, 3000)
        y_pred = np.where(rng.random(3000) < 0.7, y_true, rng.integers(0, k, 3000))
        classes = [f"k{i}" for i in range(k)]
        cells = {}
        for t, p in zip(y_true.tolist(), y_pred.tolist()):
            cells[(classes[t], classes[p])] = cells.get((classes[t], classes[p]), 0) + 1
        dense = metrics_from_confusion(confusion_matrix(y_true, y_pred, k), classes)
        got = metrics_from_cells(cells, classes)
        if k <= DENSE_CONFUSION_MAX:
            assert got == dense
        assert {key: v for key, v in got.items() if key not in ("confusion", "confusion_cells")} == \
            {key: v for key, v in dense.items() if key != "confusion"}
        assert ("confusion" in got) == (k <= DENSE_CONFUSION_MAX) and ("confusion_cells" in got) == (k > DENSE_CONFUSION_MAX)
        if k > DENSE_CONFUSION_MAX:
            assert sum(n for _, _, n in got["confusion_cells"]) == 3000 and len(got["confusion_cells"]) == len(cells)
        # the classes that occur, densely, whichever form
        matrix, names = confusion_of(got)
        occurring = sorted(set(y_true) | set(y_pred))
        assert names == [classes[i] for i in occurring]
        np.testing.assert_array_equal(matrix, confusion_matrix(y_true, y_pred, k)[np.ix_(occurring, occurring)])


def test_label_ranks_are_those_of_a_full_sort_and_recall_counts_them():
    from pairspark.core.metrics import label_ranks, recall_at

    rng = np.random.default_rng(3)
    x = rng.normal(size=(700, 6))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    classes = rng.normal(size=(40, 6))
    classes /= np.linalg.norm(classes, axis=1, keepdims=True)
    classes[7] = classes[3]  # an exact tie counts for the label
    labels = rng.integers(-1, 40, size=700)  # -1: a label that is no class
    ranks = label_ranks(x, classes, labels)
    cos = x @ classes.T
    for i in range(700):
        if labels[i] < 0:
            assert ranks[i] > 10**18
        else:
            order = sorted(range(40), key=lambda c: -cos[i, c])
            better = [c for c in order if cos[i, c] > cos[i, labels[i]]]
            assert ranks[i] == len(better) + 1
    recall = recall_at(ranks, (1, 16, 64))
    assert recall == {"1": np.mean(ranks == 1), "16": np.mean(ranks <= 16), "64": np.mean(labels >= 0)}
    assert recall_at(np.zeros(0, np.int64), (1,)) == {"1": 0.0}
