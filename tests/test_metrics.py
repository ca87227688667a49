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
