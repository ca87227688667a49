"""Classification metrics from a confusion matrix (METHOD.md step 7)."""

from __future__ import annotations

import numpy as np


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


# Up to this many classes metrics.json holds the dense confusion matrix ("confusion", C x C);
# above, its non-zero cells ("confusion_cells": [reference, predicted, items], at most one per
# item): 10,000 classes would be 100 million cells, 800 MB on the driver and far more as JSON.
DENSE_CONFUSION_MAX = 500


def metrics_from_confusion(confusion: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, support-weighted F1 (as Spark's evaluator), macro F1 and per-class figures.

    Macro F1 averages over the classes present in the reference or the predictions, so classes
    absent from both (e.g. a taxonomy entry no item has) neither help nor hurt it.
    A class never predicted has precision 0, as in Spark and scikit-learn.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    metrics = _metrics(confusion.sum(axis=1), confusion.sum(axis=0), np.diag(confusion), classes)
    metrics["confusion"] = confusion.tolist()
    metrics["per_class"] = metrics.pop("per_class")  # after "confusion", as metrics.json always had them
    return metrics


def metrics_from_cells(cells: dict[tuple[str, str], int], classes: list[str]) -> dict:
    """metrics_from_confusion from the non-zero cells {(reference, predicted): items} (every value
    among `classes`): the same figures without a C x C matrix; the dense matrix up to
    DENSE_CONFUSION_MAX classes, the cells above."""
    index = {c: i for i, c in enumerate(classes)}
    ref = np.array([index[r] for r, _ in cells], dtype=np.int64)
    pred = np.array([index[p] for _, p in cells], dtype=np.int64)
    items = np.array(list(cells.values()), dtype=np.int64)
    if len(classes) <= DENSE_CONFUSION_MAX:
        confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
        np.add.at(confusion, (ref, pred), items)
        return metrics_from_confusion(confusion, classes)
    support, predicted, true_pos = (np.zeros(len(classes), np.int64) for _ in range(3))
    np.add.at(support, ref, items)
    np.add.at(predicted, pred, items)
    np.add.at(true_pos, ref[ref == pred], items[ref == pred])
    metrics = _metrics(support, predicted, true_pos, classes)
    order = np.lexsort((pred, ref))
    metrics["confusion_cells"] = [[classes[ref[i]], classes[pred[i]], int(items[i])] for i in order]
    metrics["per_class"] = metrics.pop("per_class")
    return metrics


def confusion_of(metrics: dict) -> tuple[np.ndarray, list[str]]:
    """(confusion, classes) of the classes that occur, dense, from either form of metrics_from_*."""
    classes = metrics["classes"]
    if "confusion" in metrics:
        confusion = np.asarray(metrics["confusion"], dtype=np.int64)
        present = (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0
        return confusion[np.ix_(present, present)], [c for c, p in zip(classes, present) if p]
    cells = metrics["confusion_cells"]
    names = sorted({c for ref, pred, _ in cells for c in (ref, pred)}, key={c: i for i, c in enumerate(classes)}.get)
    index = {c: i for i, c in enumerate(names)}
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    for ref, pred, n in cells:
        confusion[index[ref], index[pred]] += n
    return confusion, names


def _metrics(support: np.ndarray, predicted: np.ndarray, true_pos: np.ndarray, classes: list[str]) -> dict:
    support = np.asarray(support, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    true_pos = np.asarray(true_pos).astype(np.float64)
    total = int(support.sum())
    precision = _safe_div(true_pos, predicted.astype(np.float64))
    recall = _safe_div(true_pos, support.astype(np.float64))
    f1 = _safe_div(2 * precision * recall, precision + recall)
    present = (support > 0) | (predicted > 0)
    return {
        "n": total,
        "accuracy": float(true_pos.sum() / total) if total else 0.0,
        "weighted_f1": float((f1 * support).sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "classes": list(classes),
        "per_class": {
            c: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "predicted": int(predicted[i]),
            }
            for i, c in enumerate(classes)
        },
    }


# Ranks at which the candidate rule's recall is reported (core/tournament.resolve_candidates: an
# item plays among its K best classes by base cosine, so its answer can be right only when its
# true class ranks <= K).
RECALL_AT = (1, 2, 4, 8, 16, 32, 64)


def label_ranks(x_unit: np.ndarray, class_unit: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per row, the rank (1 = best) of its label's base cosine among the classes: 1 + the number
    of classes with a strictly higher cosine (an exact tie counts for the label, as the
    candidates' partition may take either). A label of -1 (not a class) never ranks: int64's max.
    Rows go through in chunks of at most 2^22 cells, like classify."""
    n_classes = class_unit.shape[0]
    ranks = np.full(len(labels), np.iinfo(np.int64).max, dtype=np.int64)
    rows = max(1, 2**22 // max(n_classes, 1))
    for start in range(0, len(labels), rows):
        part = slice(start, start + rows)
        known = np.flatnonzero(labels[part] >= 0)
        if not len(known):
            continue
        cos = x_unit[part][known] @ class_unit.T
        own = cos[np.arange(len(known)), labels[part][known]]
        ranks[start + known] = 1 + (cos > own[:, None]).sum(axis=1)
    return ranks


def recall_at(ranks: np.ndarray, at: tuple[int, ...] = RECALL_AT) -> dict[str, float]:
    """Share of rows whose rank is <= K, per K (fewer classes than K: every row)."""
    return {str(k): float(np.mean(ranks <= k)) if len(ranks) else 0.0 for k in at}
