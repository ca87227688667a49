"""Experiment tracking with MLflow, for catalog teams whose Spark jobs already report there.

Why: where a team runs its Spark jobs, it usually keeps its runs in MLflow (Databricks, or a
tracking server of its own) and compares them there. A pairspark fit, evaluate or run then
shows up beside their other jobs: every setting as a param, the report's figures (agreement,
accuracy vs the label, counts) as metrics, each stage's seconds, the report and the model's
facts as artifacts, and the fitted model in MLflow's Spark format (`log_model`/`load_model`).

Tracking is on when MLFLOW_TRACKING_URI is set or an experiment name is given; otherwise none of
this runs. MLflow is an optional extra (`pip install 'pairspark[mlflow]'`, mlflow-skinny): this
module imports it only when tracking is on, and says how to install it when it is missing.

    from pairspark import tracking
    if tracking.tracking_enabled(experiment):
        with tracking.tracked("run", experiment, settings.to_json()) as t:
            report = ...                      # the work; an exception ends the run FAILED
            t.metrics(tracking.report_metrics(report))
            t.artifact("out/report")          # a local file or folder (or any Hadoop path, given spark)

Limits (mlflow-skinny 3.17, pyspark 4.3):
- The skinny client has no database backend (no SQLAlchemy), and MLflow 3.17 refuses its file
  store unless MLFLOW_ALLOW_FILE_STORE=true. For a local store (`file:` URI or a plain path) this
  module sets that variable when it is unset; with no tracking URI at all (an experiment name
  only) it tracks to `file:<cwd>/mlruns` instead of MLflow's default `sqlite:///mlflow.db`.
- `log_model` writes through `mlflow.spark`, which wraps the model in a one-stage PipelineModel
  (pyspark saves it with its Python-side writer: our stage writes through DataFrames), saves it
  under `dfs_tmpdir` (default /tmp/mlflow, on the cluster's default file system) and copies it to
  the driver through the JVM's Hadoop FileSystem: a classic session only, not Spark Connect.
- The logged model loads back with `load_model` (or `mlflow.spark.load_model`, which returns the
  PipelineModel) where pairspark itself is installed; its requirements.txt pins pyspark, numpy,
  pandas, pyarrow and numba but not pairspark (not on PyPI). MLflow's pyfunc flavor (`mlflow
  models serve`, `pyfunc.predict`) does not work: it reads a `prediction` column, and the model
  writes NAME_class columns per view.
- Params are strings of at most 500 characters (the limit of older tracking servers), cut with
  "..."; the full settings are also logged as the artifact `settings.json`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

from pairspark.errors import UsageError

log = logging.getLogger("pairspark")

INSTALL = "pip install 'pairspark[mlflow]'"
PARAM_VALUE_LIMIT = 500  # MLflow allows 6000 now; 500 was the limit before 2.x and on some servers
NAME_LIMIT = 250  # MLflow's limit on param and metric names
_BATCH_METRICS, _BATCH_PARAMS = 1000, 100  # MLflow's log_batch limits
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")
# report parts that are not single figures (per-class tables, matrices, lists)
_NOT_METRICS = frozenset({"per_class", "confusion", "confusion_cells", "classes", "class_counts", "by_pair"})
_RUNTIME = ("pyspark", "numpy", "pandas", "pyarrow", "numba")  # what loading the model imports

_active: Tracker | None = None


def _mlflow():
    try:
        import mlflow
    except ImportError as exc:
        raise UsageError(f"experiment tracking needs MLflow, which is not installed ({exc}); {INSTALL}") from None
    return mlflow


def tracking_enabled(experiment: str | None = None) -> bool:
    """True when MLFLOW_TRACKING_URI is set or an experiment name is given; then MLflow must be
    installed (UsageError naming the extra otherwise)."""
    enabled = bool(experiment) or bool(os.environ.get("MLFLOW_TRACKING_URI"))
    if enabled:
        _mlflow()
    return enabled


def _is_local_store(uri: str) -> bool:
    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")  # C:\... on Windows


def _configure(mlflow) -> str:
    """The tracking URI to use, made workable with the skinny client (see the module's limits)."""
    if not mlflow.is_tracking_uri_set():
        try:
            import sqlalchemy  # noqa: F401  (MLflow's default sqlite store needs it)
        except ImportError:
            uri = Path("mlruns").resolve().as_uri()
            log.info("MLFLOW_TRACKING_URI is not set: tracking to %s", uri)
            mlflow.set_tracking_uri(uri)
    uri = mlflow.get_tracking_uri()
    if _is_local_store(uri) and "MLFLOW_ALLOW_FILE_STORE" not in os.environ:
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    return uri


def metric_name(name: str) -> str:
    """`name` with every character MLflow may refuse replaced by '_', cut to its length limit."""
    return _UNSAFE.sub("_", str(name))[:NAME_LIMIT]


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= PARAM_VALUE_LIMIT else text[: PARAM_VALUE_LIMIT - 3] + "..."


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def report_metrics(report: dict) -> dict[str, float]:
    """Every figure of a metrics.json report (pipeline.evaluate) as {dotted.name: value}:
    counts.items, counts.quarantined_by_reason.<reason>, agreement.<method>.weighted_f1,
    vs_label.<view>.<method>.accuracy, binary.<group>.<method>..., changes.changed.<view>...
    Per-class tables, confusion matrices, lists and strings are left out; names keep only
    [A-Za-z0-9_-. /] (others become '_'; a name made equal to an earlier one gets _2, _3...)."""
    out: dict[str, float] = {}

    def walk(prefix: str, node: dict) -> None:
        for key, value in node.items():
            if key in _NOT_METRICS:
                continue
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict):
                walk(name, value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                safe, n = metric_name(name), 1
                while safe in out:
                    n += 1
                    safe = f"{metric_name(name)[: NAME_LIMIT - len(str(n)) - 1]}_{n}"
                out[safe] = float(value)

    walk("", report)
    return out


class Tracker:
    """One MLflow run: what a tracked block logs to. Writes through MlflowClient with the run's
    id, so any thread may log (log_model, which MLflow ties to the active run, excepted)."""

    def __init__(self, mlflow, run_id: str):
        self._mlflow = mlflow
        self.run_id = run_id
        self.client = mlflow.tracking.MlflowClient()

    def params(self, values: dict[str, Any]) -> None:
        """Logs each value as a string param (JSON for non-strings, cut to 500 characters)."""
        from mlflow.entities import Param

        params = [Param(metric_name(k), _param_value(v)) for k, v in values.items()]
        for chunk in _chunks(params, _BATCH_PARAMS):
            self.client.log_batch(self.run_id, params=chunk)

    def metrics(self, values: dict[str, float], step: int = 0) -> None:
        """Logs the finite numbers among `values` (names made safe with metric_name)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(metric_name(k), float(v), now, step) for k, v in values.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        for chunk in _chunks(metrics, _BATCH_METRICS):
            self.client.log_batch(self.run_id, metrics=chunk)

    def stage_seconds(self, name: str, seconds: float) -> None:
        """A stage's wall time, as the metric seconds.<name>."""
        self.metrics({f"seconds.{name}": round(seconds, 3)})

    def artifact(self, path: str, artifact_path: str | None = None, spark=None) -> None:
        """Logs a file into the folder `artifact_path` (default: the top), or a folder's files into
        the folder `artifact_path` (default: the folder's own name). A `file:` URI or local path is
        read in place; any other Hadoop path (hdfs:, s3a:, ...) is first copied to the driver
        through `spark`'s Hadoop FileSystem."""
        scheme = urlparse(path).scheme
        local = urlparse(path).path if scheme == "file" else path
        if scheme not in ("", "file"):
            if spark is None:
                raise UsageError(f"{path} is not on the driver's disk: pass spark to copy it there")
            from pairspark.spark.fs import FileSystem

            fs = FileSystem(spark)
            local = fs.local_path(path)
            if local is None:
                with tempfile.TemporaryDirectory(prefix="pairspark-artifact-") as tmp:
                    copy = os.path.join(tmp, path.rstrip("/").rsplit("/", 1)[-1])
                    fs.copy_to_local(path, copy)
                    self.artifact(copy, artifact_path)
                return
        if os.path.isdir(local):
            self.client.log_artifacts(self.run_id, local, artifact_path or os.path.basename(os.path.normpath(local)))
        else:
            self.client.log_artifact(self.run_id, local, artifact_path)

    def text(self, text: str, artifact_file: str) -> None:
        """Logs a string as the artifact `artifact_file` (e.g. "report/report.html")."""
        self.client.log_text(self.run_id, text, artifact_file)

    def json(self, data: dict, artifact_file: str) -> None:
        """Logs a dict as the JSON artifact `artifact_file` (e.g. "report/metrics.json")."""
        self.client.log_text(self.run_id, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", artifact_file)

    def model(self, model, artifact_path: str = "model", dfs_tmpdir: str | None = None) -> str:
        """log_model into this run (call it from the thread that opened the block); its URI."""
        return log_model(model, artifact_path, dfs_tmpdir)


def active() -> Tracker | None:
    """The tracker of the tracked block running now, if any (for code deep in a stage)."""
    return _active


def _experiment_id(mlflow, name: str) -> str:
    """The id of experiment `name`, created if missing (without mlflow.set_experiment, which
    would change the process's active experiment)."""
    client = mlflow.tracking.MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name)
        except mlflow.exceptions.MlflowException:
            found = client.get_experiment_by_name(name)  # created meanwhile by another run
            if found is None:
                raise
    if found.lifecycle_stage != "active":
        raise UsageError(f"MLflow experiment {name!r} is deleted: restore it or give another name")
    return found.experiment_id


@contextmanager
def tracked(command: str, experiment: str | None = None, settings: dict[str, Any] | None = None) -> Iterator[Tracker]:
    """A run named pairspark-<command>, in `experiment` when given (created if missing), else in
    MLflow's (MLFLOW_EXPERIMENT_NAME/ID or the default), nested under the caller's active MLflow
    run if there is one; every setting logged as a param, the whole as settings.json. Ends
    FINISHED, or FAILED (KILLED on Ctrl-C) with a `pairspark.error` tag when the block raises,
    the exception going on. A tracked block inside another (run's fit inside run) logs to the
    outer run and leaves its params alone."""
    global _active
    if _active is not None:
        yield _active
        return
    mlflow = _mlflow()
    _configure(mlflow)
    from pairspark.version import __version__

    experiment_id = _experiment_id(mlflow, experiment) if experiment else None
    run = mlflow.start_run(experiment_id=experiment_id, run_name=f"pairspark-{command}",
                           nested=mlflow.active_run() is not None,
                           tags={"pairspark.command": command, "pairspark.version": __version__})
    tracker = Tracker(mlflow, run.info.run_id)
    _active, status = tracker, "FINISHED"
    try:
        if settings:
            tracker.params(settings)
            tracker.json(settings, "settings.json")
        yield tracker
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        try:
            tracker.client.set_tag(tracker.run_id, "pairspark.error", f"{type(exc).__name__}: {exc}"[:5000])
        except Exception as tag_error:  # the run still ends FAILED; the original error goes on
            log.warning("could not tag the MLflow run with the error: %s", tag_error)
        raise
    finally:
        _active = None
        mlflow.end_run(status)


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in _RUNTIME:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pass
    return pins


def log_model(model, artifact_path: str = "model", dfs_tmpdir: str | None = None) -> str:
    """The fitted PairwiseTournamentModel (or a PipelineModel holding it) logged with
    mlflow.spark.log_model into the active run (outside one: a run of its own); its model URI,
    for load_model. Requirements are given, not inferred (MLflow would reload the model in a
    subprocess with a Spark session of its own to infer them). Limits: the module's docstring."""
    mlflow = _mlflow()
    import mlflow.spark

    if mlflow.active_run() is None:
        if _active is not None:  # MLflow's active run is per thread
            raise UsageError("log_model: call it from the thread that opened the tracked block")
        with tracked("log-model"):
            return log_model(model, artifact_path, dfs_tmpdir)
    _configure(mlflow)
    info = mlflow.spark.log_model(model, artifact_path, dfs_tmpdir=dfs_tmpdir, pip_requirements=_requirements())
    return info.model_uri


def load_model(uri: str, dfs_tmpdir: str | None = None):
    """A model logged by log_model (runs:/RUN/model, models:/..., or its artifact path), through
    mlflow.spark.load_model: the PairwiseTournamentModel when it is the one stage, else the
    PipelineModel. Needs a classic Spark session (active, or created by MLflow)."""
    mlflow = _mlflow()
    import mlflow.spark

    from pairspark.ml import PairwiseTournamentModel

    _configure(mlflow)
    pipeline = mlflow.spark.load_model(uri, dfs_tmpdir=dfs_tmpdir)
    stages = pipeline.stages
    return stages[0] if len(stages) == 1 and isinstance(stages[0], PairwiseTournamentModel) else pipeline
