"""The run stage: fit, classify, (diff,) review and evaluate into one OUT, published together:
readers see the last run's set of outputs or this one's, never a mix; one run per OUT at a time."""

from __future__ import annotations

import logging

from pyspark.sql import SparkSession

from pairspark.config import Settings
from pairspark.errors import UsageError
from pairspark.pipeline.classify import PREDICTIONS_INFO, classify, predictions_table
from pairspark.pipeline.fit import fit
from pairspark.pipeline.inspect import diff, evaluate, review
from pairspark.pipeline.readers import read_items
from pairspark.pipeline.stage import now, tracked
from pairspark.spark.io import TABLE_PREFIX, require_columns
from pairspark.spark.fs import FileSystem
from pairspark.spark.publish import atomic_output, output_lock, recover, repoint
from pairspark.views import View, format_views

log = logging.getLogger("pairspark")


_RUN_OUTPUTS = ("model", "predictions", "quarantine", "changes", "review", "report")


def _check_run_paths(fs: FileSystem, items_path: str, classes_path: str, out: str) -> None:
    """Refuse an OUT that is, or is inside, an input (or holds one: a run replaces OUT as a whole)."""
    q_out = fs.qualify(out).rstrip("/")
    for flag, path in (("--items", items_path), ("--classes", classes_path)):
        if path.startswith(TABLE_PREFIX):
            continue
        q_in = fs.qualify(path.rstrip("/")).rstrip("/")
        if q_out == q_in or q_out.startswith(q_in + "/"):
            raise UsageError(f"--out {out} is {'the' if q_out == q_in else 'inside the'} {flag} path {path}; "
                             "choose an output folder elsewhere")
        if q_in.startswith(q_out + "/"):
            raise UsageError(f"{flag} {path} is inside --out {out}, which a run replaces as a whole; "
                             "choose another output folder")


def _check_run_folder(fs: FileSystem, out: str) -> None:
    """Refuse to replace an existing OUT that is not a run's output folder (a run replaces all of it)."""
    if not fs.exists(out):
        return
    if not fs.is_dir(out):
        raise UsageError(f"--out {out} is a file, not a folder")

    def ours(name: str) -> bool:  # outputs, markers, Hadoop checksums, older runs' leftovers
        return (name in (*_RUN_OUTPUTS, "_SUCCESS") or (name.startswith(".") and name.endswith(".crc"))
                or any(name.startswith((f"{o}.staging-", f"{o}.old-")) for o in _RUN_OUTPUTS))

    foreign = [n for n in fs.list_names(out) if not ours(n)]
    if foreign:
        raise UsageError(f"--out {out} holds more than a pairspark run ({', '.join(foreign[:5])}"
                         f"{', ...' if len(foreign) > 5 else ''}) and a run replaces the whole folder; "
                         "choose a new or empty folder")


def _previous_predictions(fs: FileSystem, previous: str | None, out: str, views: list[View]) -> str | None:
    """The predictions to diff against: `previous`, else OUT/predictions when the last run left some."""
    own = f"{out}/predictions"
    if previous:
        previous = previous.rstrip("/")
        if not fs.exists(f"{previous}/{PREDICTIONS_INFO}"):
            if fs.qualify(previous) == fs.qualify(own):
                log.warning("--previous %s does not exist yet (the first run into %s): no changes to report", previous, out)
                return None
            raise UsageError(f"--previous {previous} holds no pairspark predictions ({PREDICTIONS_INFO} missing)")
        candidate = previous
    elif fs.exists(f"{own}/{PREDICTIONS_INFO}"):
        candidate = own
    else:
        return None
    if not set(fs.read_json(f"{candidate}/{PREDICTIONS_INFO}").get("views", [])) & {v.name for v in views}:
        if previous:
            raise UsageError(f"--previous {previous} shares no view with this run ({', '.join(v.name for v in views)})")
        log.warning("the last run's predictions in %s share no view with this run: no changes to report", candidate)
        return None
    log.info("changes are reported against %s", candidate)
    return candidate


def _repoint_outputs(fs: FileSystem, staging: str, out: str) -> None:
    """Paths recorded by the stages (_pairspark.json's model and quarantine, summary.json's new,
    metrics.json's predictions, the report page) name STAGING/...: make them name OUT/..."""
    for output in fs.list_names(staging):
        for name in fs.list_names(f"{staging}/{output}"):
            if name.endswith((".json", ".html")):
                path = f"{staging}/{output}/{name}"
                text = fs.read_text(path)
                if (fixed := repoint(text, staging, out)) != text:
                    fs.write_text(path, fixed)


def run(
    spark: SparkSession,
    items_path: str,
    classes_path: str,
    views: list[View],
    out: str,
    settings: Settings,
    label_col: str | None = None,
    previous: str | None = None,
    show_cols: list[str] | None = None,
) -> dict:
    """fit, classify, (diff against the previous predictions,) review, evaluate into OUT/model,
    OUT/predictions, OUT/quarantine, (OUT/changes,) OUT/review, OUT/report, published together: readers see the last run's set
    or this one's, never a mix. The previous predictions are `previous`, else OUT/predictions of the
    last run there (`--previous OUT/predictions`, the nightly cron line, stays readable until the
    new set replaces it). One run per OUT at a time (OUT.lock)."""
    out = out.rstrip("/")
    fs = FileSystem(spark)
    _check_run_paths(fs, items_path, classes_path, out)
    # every argument checked before any work: the items' columns named by the options
    named = [c for c in [label_col, *(show_cols or [])] if c]
    if named:
        require_columns(read_items(spark, items_path, settings), named, "items table")
    params = {**settings.to_json(), "items": items_path, "classes": classes_path, "views": format_views(views),
              "out": out, "label_col": label_col, "previous": previous}
    with tracked("run", settings.experiment, params) as tracker, output_lock(fs, out) as lock:
        recover(fs, out)
        _check_run_folder(fs, out)
        previous = _previous_predictions(fs, previous, out, views)
        marker: dict = {}
        # the whole run goes into one staging folder beside OUT, published as OUT in one swap
        with atomic_output(fs, out, marker) as staging:
            fit(spark, items_path, classes_path, views, f"{staging}/model", settings, last_model=f"{out}/model")
            classify(spark, items_path, f"{staging}/model", f"{staging}/predictions", settings, label_col,
                     f"{staging}/quarantine", publish_table=False)
            changes = None
            if previous:
                changes = f"{staging}/changes"
                diff(spark, previous, f"{staging}/predictions", changes)
            review(spark, f"{staging}/predictions", f"{staging}/review", settings.review_below, label_col,
                   items_path, show_cols, items_format=settings.items_format)
            report = evaluate(spark, f"{staging}/predictions", f"{staging}/report", label_col, changes, show_cols,
                              settings.binary, review_dir=f"{staging}/review")
            _repoint_outputs(fs, staging, out)
            marker.update(created_at=now(), outputs=[n for n in fs.list_names(staging) if n in _RUN_OUTPUTS],
                          counts=report["counts"], previous=fs.qualify(previous) if previous else None)
            lock.check()
        report = repoint(report, staging, out)
        if settings.predictions_table:  # from the published predictions, once they are OUT's
            report["table"] = predictions_table(spark, f"{out}/predictions", settings.predictions_table)
        if tracker is not None:  # the published report, its paths naming OUT
            tracker.json(report, "report/metrics.json")
            tracker.text(fs.read_text(f"{out}/report/report.html"), "report/report.html")
    return report
