"""The fit stage: MODEL_DIR from the items and classes tables, through the estimator (ml.py), or
under --warm-start the previous model itself when nothing the fit depends on changed (reuse.py)."""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession

from pairspark import reuse
from pairspark.config import Settings
from pairspark.ml import PairwiseTournamentClassifier, PairwiseTournamentModel
from pairspark.pipeline.readers import arrow_scan, read_items
from pairspark.pipeline.stage import now, source_ref, stage, tracked, versions
from pairspark.spark.io import load_classes
from pairspark.spark.fs import FileSystem
from pairspark.spark.publish import atomic_output
from pairspark.spark.items import ERROR, check_item_dims, require_item_columns, stop_on_invalid_items
from pairspark.views import View, format_views

log = logging.getLogger("pairspark")


def fit(spark: SparkSession, items_path: str, classes_path: str, views: list[View], out: str, settings: Settings,
        last_model: str | None = None) -> dict:
    """MODEL_DIR from the items and classes tables, through PairwiseTournamentClassifier; or, under
    --warm-start, the previous model itself when nothing the fit depends on changed (reuse.py).
    `last_model`: where the previous run's model is, for --warm-start auto (default: `out`)."""
    params = {**settings.to_json(), "items": items_path, "classes": classes_path, "views": format_views(views), "out": out}
    with tracked("fit", settings.experiment, params) as tracker, stage("fit", spark) as facts:
        items = read_items(spark, items_path, settings)
        fs = FileSystem(spark)
        estimator = PairwiseTournamentClassifier(classesPath=classes_path, classesFormat=settings.classes_format,
                                                 views=format_views(views), labelsPath=settings.labels, **settings.params)
        run_versions = versions()
        scan = arrow_scan(items, items_path, views, None, settings)
        previous = reuse.previous_model(fs, settings.warm_start, last_model or out)
        # taken before the fit reads anything (an input rewritten meanwhile differs tomorrow), and
        # recorded under off too: tomorrow's run may reuse this one's model
        current = reuse.fingerprint(spark, fs, items, {"items": items_path, "classes": classes_path, "labels": settings.labels},
                                    estimator, settings.to_json(), run_versions, arrow_reader=scan is not None)
        warm = reuse.decide(fs, previous, current) if previous else None
        model = None
        if warm and warm["reused"]:
            try:
                model = PairwiseTournamentModel.load(previous)
            except Exception as exc:  # noqa: BLE001  (a damaged model: fit instead, and say why)
                warm = {"model": warm["model"], "reused": False,
                        "reason": f"it could not be loaded ({str(exc).splitlines()[0][:200]})"}
        run_facts = {"settings": settings.to_json(),
                     "inputs": {"items": source_ref(fs, items_path), "classes": source_ref(fs, classes_path),
                                **({"labels": fs.qualify(settings.labels)} if settings.labels else {})}}
        if model is not None:
            log.info("fit: the inputs of %s are unchanged; its model is reused (%s reads of the items and %s s saved)",
                     warm["model"], warm["reads_saved"], warm["seconds_saved"])
            model.meta = {**model.meta, "created_at": now(), **run_facts, "warm_start": warm}
        else:
            if warm:
                log.info("fit: a cold fit, %s cannot be reused: %s", warm["model"], warm["reason"])
            if settings.on_invalid == ERROR:
                _stop_on_invalid_items(spark, items, estimator, views, items_path)
            facts.update(reader="arrow" if scan is not None else "spark")
            model = estimator.fit_items(items, scan)
            model.meta = {"created_at": now(), **model.meta, **run_facts, "versions": run_versions,
                          **({"fingerprint": current} if isinstance(current, dict) else {}),
                          **({"warm_start": warm} if warm else {})}
        with atomic_output(spark, out, {"counts": model.meta["counts"]}) as staging:
            model.write().save(staging)
            fs.write_json(f"{staging}/meta.json", model.meta)  # a readable copy of the metadata's "pairspark" part
        confident = {v["name"]: v["confident_items"] for v in model.meta["views"]}
        facts.update(valid_items=model.meta["counts"]["valid_items"], confident=confident, out=out,
                     reused=bool(warm and warm["reused"]))
        if tracker is not None:
            tracker.json(model.meta, "model_meta.json")
            uri = tracker.model(model)  # mlflow.spark format: mlflow.spark.load_model gives it back
            tracker.client.set_tag(tracker.run_id, "pairspark.model_uri", uri)
    return model.meta


def _stop_on_invalid_items(spark, items: DataFrame, estimator, views: list[View], where: str) -> None:
    """--on-invalid error at fit: name the first three bad rows before any fitting."""
    tables = load_classes(spark, estimator.getClassesPath(), views, estimator.classes_format())
    dims = {n: t.dim for n, t in tables.items()}
    require_item_columns(items, views)
    check_item_dims(items, views, dims)
    stop_on_invalid_items(items, views, dims, where)
