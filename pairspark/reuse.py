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
(every Param that acts at fit, the run options that decide what is read, how it is split and
checked), the Spark settings that decide the partitions and batches (the order partial
statistics are summed in, so the last bits of the model; with pyarrow's reader only the batch
size), and the library versions. A source given as table:NAME, or one that is not a set of files
Spark can list (a JDBC table), has no fingerprint: always a cold fit.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from pairspark.spark.io import TABLE_PREFIX, read_source
from pairspark.spark.fs import FileSystem

log = logging.getLogger("pairspark")

# the run options that change a fit's numbers (what is read, how it is split and checked)
FIT_OPTIONS = ("partitions", "items_format", "classes_format", "items_reader", "on_invalid")
# Spark settings that decide a Parquet scan's partitions through Spark's reader (the order partial
# statistics are summed in); pyarrow's reader has one task per row group, whatever they say
SPLIT_CONF = ("spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes", "spark.sql.files.minPartitionNum",
              "spark.sql.files.maxPartitionNum", "spark.sql.leafNodeDefaultParallelism")
BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"
# the estimator's Params that name inputs (their files are fingerprinted instead) or act only at classify
_NOT_FIT_PARAMS = ("classesPath", "labelsPath", "candidates", "topK")
_WHAT = {"items": "the items changed", "classes": "the classes changed", "labels": "the labels changed",
         "settings": "the fit settings changed", "spark": "the items' partitioning or batch settings changed",
         "versions": "a library version changed"}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _files(fs: FileSystem, frame: DataFrame, what: str) -> str:
    uris = list(frame.inputFiles())
    if not uris:
        raise _NoFingerprint(f"the {what} are not files Spark can list")
    return _digest(fs.file_facts(uris))


class _NoFingerprint(Exception):
    pass


def fingerprint(spark: SparkSession, fs: FileSystem, items: DataFrame, sources: dict[str, str | None], estimator,
                options: dict[str, Any], versions: dict[str, str], arrow_reader: bool) -> dict[str, str] | str:
    """One hash per part of what a fit depends on, or why there is none: a table:NAME source (a
    view or a table's query can change its rows while its files stay), a source Spark lists no
    files for, or files that cannot be listed (never an error: the fit just cannot be reused).
    `sources`: the items, classes and labels as given; `arrow_reader`: the fit reads the items with
    pyarrow (spark/arrow_scan.py), whose tasks do not depend on the split settings or the cores."""
    if any(source and source.startswith(TABLE_PREFIX) for source in sources.values()):
        return "a source is a table (table:NAME): its rows can change while its files do not"
    try:
        classes = read_source(spark, estimator.getClassesPath(), "classes", estimator.classes_format())
        labels = estimator.labels_path()
        params = {p.name: estimator.getOrDefault(p) for p in estimator.params
                  if estimator.isDefined(p) and p.name not in _NOT_FIT_PARAMS}
        split = {"reader": "arrow"} if arrow_reader else {
            "cores": spark.sparkContext.defaultParallelism, **{k: spark.conf.get(k, None) for k in SPLIT_CONF}}
        return {
            "items": _files(fs, items, "items"),
            "classes": _files(fs, classes, "classes"),
            "labels": _files(fs, _labels_frame(spark, labels), "labels") if labels else "none",
            "settings": _digest({"params": params, "options": {k: options.get(k) for k in FIT_OPTIONS}}),
            "spark": _digest({**split, "batch": spark.conf.get(BATCH_CONF, None)}),
            "versions": _digest(versions),
        }
    except _NoFingerprint as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001  (a listing that fails costs the reuse, never the fit)
        log.warning("fit: the inputs could not be fingerprinted (%s); tomorrow's fit cannot reuse this one",
                    str(exc).splitlines()[0][:200])
        return f"the inputs could not be listed ({str(exc).splitlines()[0][:200]})"


def _labels_frame(spark: SparkSession, path: str) -> DataFrame:
    """The labels as io.read_labels reads them (a glob included), for their files."""
    fmt = "csv" if path.lower().rstrip("/").endswith(".csv") else "parquet"
    return spark.read.format(fmt).load(path)


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
