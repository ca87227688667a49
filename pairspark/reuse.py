"""Reusing last night's fit when nothing it depends on has changed (`--warm-start`).

Why not a warm start of the refinement: cotrain's rounds stop where their training targets
repeat, and where they stop depends on where they start. Started from last night's
discriminants, they reach another fixed point: on the shared sets (night 1 a seeded 50% or 90% of
the items, night 2 all of them, 5 draws each) up to 3.7% of the answers differ from a cold fit's
and fashion_clip loses up to 3.3 points of accuracy (docs/METHOD.md, "Nightly reruns"). So a nightly
fit is either cold or, when its inputs are those of the model at OUT, that model itself: the same
answers by construction, and every read of the items saved.

What a fit depends on (`fingerprint`), one hash per part so that the log can say which changed:
the items' and classes' files (path, length and modification time of each, as Hadoop lists
them: a rewrite is a change even with the same bytes), the labels' files, the fit's settings
(every Param but the input paths, the views, the run options that shape the partitions and
batches), the Spark settings that decide how the items are split into partitions (the order in
which partial statistics are summed, so the last bits of the model), and the library versions.
A source that is not a set of files (a JDBC table, say) has no fingerprint: always a cold fit.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from pairspark.spark.io import read_source
from pairspark.spark.publish import FileSystem

log = logging.getLogger("pairspark")

# the run options that change a fit's numbers (how the items are split and batched, what is read)
FIT_OPTIONS = ("partitions", "arrow_batch_size", "items_format", "classes_format")
# Spark settings that decide a Parquet scan's partitions (so the order partial statistics are summed in)
SPLIT_CONF = ("spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes", "spark.sql.files.minPartitionNum",
              "spark.sql.files.maxPartitionNum")
# the estimator's Params that name inputs: their files are fingerprinted instead
_INPUT_PARAMS = ("classesPath", "labelsPath")
_WHAT = {"items": "the items changed", "classes": "the classes changed", "labels": "the labels changed",
         "settings": "the fit settings changed", "spark": "the items' partitioning settings or cores changed",
         "versions": "a library version changed"}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _files(fs: FileSystem, paths: list[str]) -> str | None:
    facts = fs.file_facts(paths) if paths else []
    return _digest(facts) if facts else None


def fingerprint(spark: SparkSession, fs: FileSystem, items: DataFrame, estimator, options: dict[str, Any],
                versions: dict[str, str]) -> dict[str, str] | str:
    """One hash per part of what a fit depends on, or why there is none (a source Spark lists no
    files for)."""
    items_files = _files(fs, list(items.inputFiles()))
    if items_files is None:
        return "the items are not files Spark can list"
    classes = read_source(spark, estimator.getClassesPath(), "classes", estimator.classes_format())
    classes_files = _files(fs, list(classes.inputFiles()))
    if classes_files is None:
        return "the classes are not files Spark can list"
    labels = estimator.labels_path()
    params = {p.name: estimator.getOrDefault(p) for p in estimator.params
              if estimator.isDefined(p) and p.name not in _INPUT_PARAMS}
    return {
        "items": items_files,
        "classes": classes_files,
        "labels": _files(fs, [labels]) if labels else "none",
        "settings": _digest({"params": params, "options": {k: options.get(k) for k in FIT_OPTIONS}}),
        "spark": _digest({"cores": spark.sparkContext.defaultParallelism,
                          **{k: spark.conf.get(k, None) for k in SPLIT_CONF}}),
        "versions": _digest(versions),
    }


def previous_model(fs: FileSystem, setting: str, last: str) -> str | None:
    """The model a fit may reuse (--warm-start): under auto `last` (the model the previous run left
    at OUT) when it holds one, a given MODEL_DIR, or None (off, or nothing there yet)."""
    if setting == "off":
        return None
    if setting != "auto":
        return setting
    return last if fs.exists(f"{last}/meta.json") else None


def decide(fs: FileSystem, previous: str, current: dict[str, str] | str) -> dict:
    """What meta.json records under warm_start: {"model", "reused": True, the fit it carries
    (fitted_at) and the reads and seconds it saves}, or {"model", "reused": False, "reason"}."""
    model = fs.qualify(previous)
    if not fs.exists(f"{previous}/meta.json"):
        return {"model": model, "reused": False, "reason": "it holds no pairspark model (no meta.json)"}
    if isinstance(current, str):
        return {"model": model, "reused": False, "reason": current}
    meta = fs.read_json(f"{previous}/meta.json")
    before = meta.get("fingerprint")
    if not isinstance(before, dict):
        return {"model": model, "reused": False, "reason": "it records no fingerprint of its inputs"}
    changed = [part for part in current if before.get(part) != current[part]]
    if changed:
        return {"model": model, "reused": False, "reason": "; ".join(_WHAT[p] for p in changed)}
    carried = meta.get("warm_start") or {}
    first = carried if carried.get("reused") else {"fitted_at": meta.get("created_at"), "reads_saved": meta.get("reads"),
                                                   "seconds_saved": meta.get("fit_seconds")}
    return {"model": model, "reused": True, "fitted_at": first["fitted_at"], "reads_saved": first["reads_saved"],
            "seconds_saved": first["seconds_saved"]}
