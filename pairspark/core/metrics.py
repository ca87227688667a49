"""Classification metrics from a confusion matrix (METHOD.md step 7)."""

from __future__ import annotations

import numpy as np


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def metrics_from_confusion(confusion: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, support-weighted F1 (as Spark's evaluator), macro F1 and per-class figures.

    Macro F1 averages over the classes present in the reference or the predictions, so classes
    absent from both (e.g. a taxonomy entry no item has) neither help nor hurt it.
    A class never predicted has precision 0, as in Spark and scikit-learn.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    true_pos = np.diag(confusion).astype(np.float64)
    total = int(confusion.sum())
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
        "confusion": confusion.tolist(),
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
