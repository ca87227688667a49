"""Evaluate: confusion matrices by grouped counts in Spark, metrics from them on the driver.

Every count evaluate needs (class counts, agreement, vs the label, binary groups) comes from one
aggregation: each row is stacked into one (pair, reference, predicted) row per needed column
pair, grouped and counted once, and every confusion matrix is built from that one result. Its
size is the number of distinct (reference, predicted) combinations per pair, never the product
over all the columns.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pairspark.core.columns import backoff_col, class_col, confidence_col, method_col, path_col, path_confidence_col
from pairspark.core.calibration import ECE_BINS, SELECTIVE_THRESHOLDS, expected_calibration_error, reliability_from_sums
from pairspark.core.cosine import unit_rows64
from pairspark.core.columns import ITEM_ID
from pairspark.core.metrics import label_ranks, metrics_from_cells, recall_at
from pairspark.core.tree import Tree, backoff_metrics, level_agreement, tree_metrics
from pairspark.errors import UsageError
from pairspark.spark.compat import to_arrow
from pairspark.spark.io import vector_column


def _none() -> Column:
    return F.lit(None).cast("string")


def _confusion(counts: dict, classes: list[str]) -> tuple[np.ndarray, list[str], int]:
    """Confusion matrix from {(reference, predicted): items}; values outside `classes` are
    appended in sorted order. Pairs with a null are left out and counted (third return value)."""
    missing = sum(n for (ref, pred), n in counts.items() if ref is None or pred is None)
    known = set(classes)
    extra = sorted({v for pair in counts for v in pair if v is not None and v not in known})
    order = list(classes) + extra
    index = {c: i for i, c in enumerate(order)}
    confusion = np.zeros((len(order), len(order)), dtype=np.int64)
    for (ref, pred), n in counts.items():
        if ref is not None and pred is not None:
            confusion[index[ref], index[pred]] += n
    return confusion, order, int(missing)


def confusion_from_spark(df: DataFrame, reference: str, predicted: str, classes: list[str]) -> tuple[np.ndarray, list[str], int]:
    """Confusion matrix of two string columns; values outside `classes` are appended in sorted order.

    Rows where either column is null are left out and counted (third return value).
    """
    rows = df.groupBy(reference, predicted).count().collect()
    return _confusion({(r[reference], r[predicted]): int(r["count"]) for r in rows}, classes)


def _scored(counts: dict, reference: str, predicted: str, classes: list[str]) -> dict:
    """Metrics of {(reference, predicted): items}: values outside `classes` appended in sorted
    order, pairs with a null left out and counted; no C x C matrix above DENSE_CONFUSION_MAX."""
    missing = sum(n for (ref, pred), n in counts.items() if ref is None or pred is None)
    known = set(classes)
    order = list(classes) + sorted({v for pair in counts for v in pair if v is not None and v not in known})
    metrics = metrics_from_cells({k: n for k, n in counts.items() if None not in k}, order)
    metrics["reference_column"], metrics["predicted_column"] = reference, predicted
    metrics["rows_skipped_null"] = missing
    return metrics


def _sizes(counts: dict, side: int) -> dict[str, int]:
    """Items per class on one side of a pair's counts, nulls left out."""
    sizes: dict[str, int] = defaultdict(int)
    for pair, n in counts.items():
        if pair[side] is not None:
            sizes[pair[side]] += n
    return dict(sizes)


class _Pairs:
    """The (reference, predicted) column pairs to count, stacked and counted in one Spark job."""

    def __init__(self) -> None:
        self.exprs: list[Column] = []
        self.counts: list[dict] = []

    def add(self, reference: Column, predicted: Column) -> int:
        self.exprs.append(F.struct(F.lit(len(self.exprs)).alias("pair"), reference.cast("string").alias("reference"),
                                   predicted.cast("string").alias("predicted")))
        self.counts.append(defaultdict(int))
        return len(self.exprs) - 1

    def count(self, df: DataFrame) -> None:
        stacked = df.select(F.explode(F.array(*self.exprs)).alias("p")).select("p.*")
        for r in stacked.groupBy("pair", "reference", "predicted").count().collect():
            self.counts[r["pair"]][(r["reference"], r["predicted"])] += int(r["count"])


def evaluate_predictions(
    predictions: DataFrame,
    view_names: list[str],
    methods: list[str],
    classes: list[str],
    label_col: str | None = None,
    binary: dict[str, list[str]] | None = None,
    tree: Tree | None = None,
) -> dict:
    """metrics.json content: counts, agreement (second view is the reference), vs_label, class
    counts, per binary group (classes in the group vs the rest) the same collapsed, and with a
    class tree its `tree` section (tree_section)."""
    if label_col and label_col not in predictions.columns:
        raise UsageError(
            f"predictions have no label column {label_col!r} (columns: {', '.join(predictions.columns)}); "
            "pass --label-col to classify as well"
        )
    for group, members in (binary or {}).items():
        unknown = [m for m in members if m not in classes]
        if unknown:
            raise UsageError(f"binary group {group}: {', '.join(unknown)} not in the class table")
    two = len(view_names) == 2
    pairs = _Pairs()

    def scored_pairs(column) -> tuple[dict, dict]:
        agreement = ({m: pairs.add(column(method_col(view_names[1], m)), column(method_col(view_names[0], m))) for m in methods}
                     if two else {})
        vs_label = ({v: {m: pairs.add(column(label_col), column(method_col(v, m))) for m in methods} for v in view_names}
                    if label_col else {})
        return agreement, vs_label

    agreement, vs_label = scored_pairs(F.col)

    def size_pair(v: str, m: str) -> tuple[int, int]:
        """Class sizes of v_m: (pair, side: 0 reference, 1 predicted) of a pair already counted, else its own."""
        if two:
            return agreement[m], 1 - view_names.index(v)
        if label_col:
            return vs_label[v][m], 1
        return pairs.add(_none(), F.col(method_col(v, m))), 1

    sizes = {v: {m: size_pair(v, m) for m in methods} for v in view_names}
    backoff = ({v: pairs.add(F.col(label_col), F.col(backoff_col(v))) for v in view_names}
               if tree is not None and label_col else {})
    groups = {}
    for group, members in (binary or {}).items():
        def collapse(column: str, members=members, group=group) -> Column:
            return F.when(F.col(column).isNull(), _none()).when(F.col(column).isin(members), group).otherwise(f"not_{group}")

        groups[group] = scored_pairs(collapse)
    pairs.count(predictions)
    counts = pairs.counts

    # every row yields exactly one stacked row per pair: items = the total of any pair
    report: dict = {"counts": {"items": sum(counts[0].values())}, "views": view_names, "methods": methods}
    report["class_counts"] = {v: {m: _sizes(counts[i], side) for m, (i, side) in by_method.items()}
                              for v, by_method in sizes.items()}
    if two:
        predicted_view, reference_view = view_names
        report["agreement"] = {
            "reference_view": reference_view,
            "predicted_view": predicted_view,
            **{m: _scored(counts[i], method_col(reference_view, m), method_col(predicted_view, m), classes)
               for m, i in agreement.items()},
        }
    if label_col:
        report["label_column"] = label_col
        first = vs_label[view_names[0]][methods[0]]
        report["counts"]["labelled"] = sum(n for (ref, _), n in counts[first].items() if ref is not None)
        report["vs_label"] = {
            v: {m: _scored(counts[i], label_col, method_col(v, m), classes) for m, i in by_method.items()}
            for v, by_method in vs_label.items()
        }

    if all(confidence_col(v) in predictions.columns for v in view_names):
        report.update(calibration_metrics(predictions, view_names, label_col))
    if tree is not None:
        report["tree"] = tree_section(predictions, tree, view_names, methods, label_col,
                                      {m: counts[i] for m, i in agreement.items()},
                                      {v: {m: counts[i] for m, i in by.items()} for v, by in vs_label.items()},
                                      {v: counts[i] for v, i in backoff.items()})
    if binary:
        report["binary"] = {}
        for group, members in binary.items():
            names = [group, f"not_{group}"]
            g_agreement, g_vs_label = groups[group]
            out: dict = {"classes": list(members)}
            for m in methods:
                entry = (_scored(counts[g_agreement[m]], method_col(view_names[1], m), method_col(view_names[0], m), names)
                         if two else {})
                if label_col:
                    entry["vs_label"] = {v: _scored(counts[g_vs_label[v][m]], label_col, method_col(v, m), names)
                                         for v in view_names}
                out[m] = entry
            report["binary"][group] = out
    return report


def reliability_sums(key: tuple, conf: Column, right: Column, usable: Column) -> list[tuple[tuple, Column]]:
    """The sums behind a reliability table, for one aggregation: per ECE_BINS equal-width bin of
    `conf` (over the `usable` rows), its items ("n"), confidence ("conf") and right answers
    ("right"), each keyed (*key, bin, what); `reliability_of` reads them back."""
    bin_ = F.least(F.greatest(F.floor(conf * ECE_BINS), F.lit(0)), F.lit(ECE_BINS - 1))
    out = []
    for b in range(ECE_BINS):
        inside = usable & (bin_ == b)
        for what, value in (("n", F.lit(1)), ("conf", conf), ("right", right)):
            out.append(((*key, b, what), F.sum(F.when(inside, value).otherwise(0))))
    return out


def reliability_of(got: dict, key: tuple) -> dict:
    """The reliability table of the sums `reliability_sums(key, ...)` gave (core/calibration.py)."""
    return reliability_from_sums(*([got[(*key, b, what)] for b in range(ECE_BINS)] for what in ("n", "conf", "right")))


def calibration_metrics(predictions: DataFrame, view_names: list[str], label_col: str | None) -> dict:
    """Per view, from one aggregation (no item collected): `confidence.VIEW` = items per
    ECE_BINS equal-width bin of NAME_confidence and its mean; with a label column also how the
    confidence matches the accuracy of NAME_class: `calibration.VIEW` = the reliability table
    and its `ece`, `selective.VIEW.T` = coverage and accuracy of the items with confidence >= T.
    Rows with a null class or confidence (and, for the label metrics, a null label) are left out."""
    exprs, keys = [], []
    for v in view_names:
        conf, cls = F.col(confidence_col(v)).cast("double"), F.col(class_col(v))
        usable = cls.isNotNull() & conf.isNotNull()
        if label_col:
            usable = usable & F.col(label_col).isNotNull()
        right = F.when(cls == F.col(label_col).cast("string"), 1).otherwise(0) if label_col else F.lit(0)
        for key, total in reliability_sums((v, "bin"), conf, right, usable):
            exprs.append(total.alias(f"c{len(keys)}"))
            keys.append(key)
        for t in SELECTIVE_THRESHOLDS:
            above = usable & (conf >= t)
            for what, value in (("n", F.lit(1)), ("right", right)):
                exprs.append(F.sum(F.when(above, value).otherwise(0)).alias(f"c{len(keys)}"))
                keys.append((v, "sel", t, what))
        exprs.append(F.sum(F.when(usable, 1).otherwise(0)).alias(f"c{len(keys)}"))
        keys.append((v, "total", 0, "n"))
    row = predictions.agg(*exprs).first()
    got = {key: float(row[f"c{i}"] or 0) for i, key in enumerate(keys)}
    confidence, calibration, selective = {}, {}, {}
    for v in view_names:
        table = reliability_of(got, (v, "bin"))
        total = got[(v, "total", 0, "n")]
        confidence[v] = {"items": int(total), "histogram": table["items"],
                         "mean": sum(got[(v, "bin", b, "conf")] for b in range(ECE_BINS)) / total if total else None}
        if not label_col:
            continue
        calibration[v] = {"ece": expected_calibration_error(table), "bins": ECE_BINS, "reliability": table}
        selective[v] = {f"{t:g}": {"coverage": got[(v, "sel", t, "n")] / total if total else 0.0,
                                   "accuracy": got[(v, "sel", t, "right")] / got[(v, "sel", t, "n")]
                                   if got[(v, "sel", t, "n")] else None,
                                   "items": int(got[(v, "sel", t, "n")])}
                        for t in SELECTIVE_THRESHOLDS}
    return {"confidence": confidence, **({"calibration": calibration, "selective": selective} if label_col else {})}


# The candidate rule's recall is measured on at most this many labelled items (a fixed hash draw):
# the true class's rank needs every class's cosine, a base classify of the draw on the driver
# (10,000 items x 10,000 classes: about 6 s); its standard error stays below 0.5 point.
RECALL_ITEMS = 10_000


def candidate_recall(predictions: DataFrame, items: DataFrame, views: list[tuple[str, str, list[str], np.ndarray]],
                     label_col: str, bracket: int, limit: int = RECALL_ITEMS) -> dict:
    """How often an item's true class is among its candidates (its `bracket` best classes by
    base cosine, core/tournament.resolve_candidates): per view, the share of labelled items whose
    label ranks <= K for K in RECALL_AT and at the bracket. `predictions`: the evaluated rows
    (labelled ones are drawn: the `limit` lowest xxhash64 of item_id); `items`: the items table
    the predictions came from; `views`: model_io.read_class_vectors. A label that is no class
    counts as missed (no candidate can be right) and is counted apart."""
    drawn = (predictions.where(F.col(label_col).isNotNull())
             .select(F.col(ITEM_ID).cast("string").alias(ITEM_ID), F.col(label_col).cast("string").alias("_label"))
             .orderBy(F.xxhash64(ITEM_ID), ITEM_ID).limit(limit))
    vectors = items.select(F.col(ITEM_ID).cast("string").alias(ITEM_ID),
                           *[vector_column(items, column, "items").cast("array<float>").alias(f"_v{i}")
                             for i, (_, column, _, _) in enumerate(views)]).dropDuplicates([ITEM_ID])
    table = to_arrow(drawn.join(vectors, ITEM_ID, "inner"))
    labels = table.column("_label").to_pylist()
    out = {"bracket": bracket, "items": len(labels), "views": {}}
    for i, (name, _, class_ids, class_vectors) in enumerate(views):
        index = {c: j for j, c in enumerate(class_ids)}
        label_index = np.array([index.get(label, -1) for label in labels], dtype=np.int64)
        x = (np.stack(table.column(f"_v{i}").to_numpy(zero_copy_only=False)) if labels
             else np.zeros((0, class_vectors.shape[1]), dtype=np.float32))
        ranks = label_ranks(unit_rows64(x), class_vectors.astype(np.float64), label_index)
        out["views"][name] = {"recall": recall_at(ranks), "at_bracket": float(np.mean(ranks <= bracket)) if len(ranks) else 0.0,
                              "labels_not_classes": int((label_index < 0).sum())}
    return out


def tree_section(predictions: DataFrame, tree: Tree, view_names: list[str], methods: list[str], label_col: str | None,
                 agreement: dict[str, dict], vs_label: dict[str, dict[str, dict]], backoff: dict[str, dict]) -> dict:
    """metrics.json's `tree`: per level, the views' agreement per method (read up the tree from
    the leaves they name); with labels (any node), per view and method core/tree.tree_metrics,
    per view the back-off's precision and coverage per depth (core/tree.backoff_metrics) and the
    ECE of NAME_path_confidence per level; and `consistent`, the share of rows whose NAME_path
    is NAME_class's path in the tree (1 by construction: checked, not assumed)."""
    out: dict = {"levels": tree.max_depth, "nodes": tree.n_nodes, "leaves": len(tree.leaves)}
    if agreement:
        out["agreement"] = {m: level_agreement(tree, cells) for m, cells in agreement.items()}
    if label_col:
        out["vs_label"] = {v: {m: tree_metrics(tree, cells) for m, cells in by.items()} for v, by in vs_label.items()}
        out["backoff"] = {v: backoff_metrics(tree, cells) for v, cells in backoff.items()}
    out.update(_tree_paths(predictions, tree, view_names, label_col))
    return out


def _tree_paths(predictions: DataFrame, tree: Tree, view_names: list[str], label_col: str | None) -> dict:
    """One aggregation: per view the rows whose path is their class's path, and with labels the
    reliability of NAME_path_confidence at each level (is the path's level-k node the label's?)."""
    spark = predictions.sparkSession
    paths = [(node, [tree.node_ids[a] for a in tree.ancestry[i] if a >= 0]) for i, node in enumerate(tree.node_ids)]
    nodes = spark.createDataFrame(paths, "node string, path array<string>")
    df = predictions
    for v in view_names:
        df = df.join(F.broadcast(nodes.select(F.col("node").alias(f"_c_{v}"), F.col("path").alias(f"_p_{v}"))),
                     F.col(class_col(v)) == F.col(f"_c_{v}"), "left")
    if label_col:
        df = df.join(F.broadcast(nodes.select(F.col("node").alias("_l"), F.col("path").alias("_lp"))),
                     F.col(label_col).cast("string") == F.col("_l"), "left")
    exprs, keys = [], []

    def add(key, value):
        exprs.append(F.sum(value).alias(f"c{len(keys)}"))
        keys.append(key)

    def at(column: str, k: int) -> Column:
        return F.when(F.size(F.col(column)) >= k, F.element_at(F.col(column), k))

    for v in view_names:
        answered = F.col(class_col(v)).isNotNull()
        add((v, "answered"), F.when(answered, 1).otherwise(0))
        add((v, "consistent"), F.when(answered & (F.col(path_col(v)) == F.col(f"_p_{v}")), 1).otherwise(0))
        if not label_col:
            continue
        for k in range(1, tree.max_depth + 1):
            conf = at(path_confidence_col(v), k).cast("double")
            usable = conf.isNotNull() & at("_lp", k).isNotNull()
            right = F.when(at(path_col(v), k) == at("_lp", k), 1).otherwise(0)
            for key, total in reliability_sums((v, k), conf, right, usable):
                exprs.append(total.alias(f"c{len(keys)}"))
                keys.append(key)
    row = df.agg(*exprs).first()
    got = {key: float(row[f"c{i}"] or 0) for i, key in enumerate(keys)}
    out: dict = {"consistent": {v: got[(v, "consistent")] / got[(v, "answered")] if got[(v, "answered")] else None
                                for v in view_names}}
    if label_col:
        out["calibration"] = {}
        for v in view_names:
            levels = {}
            for k in range(1, tree.max_depth + 1):
                table = reliability_of(got, (v, k))
                levels[str(k)] = {"ece": expected_calibration_error(table), "items": int(sum(table["items"]))}
            out["calibration"][v] = levels
    return out
