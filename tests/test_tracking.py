"""pairspark.tracking: MLflow runs (params, metrics, artifacts, status), report flattening and the
fitted model's round trip through mlflow.spark, on a local `file:` tracking store."""

from __future__ import annotations

import json
import sys

import pytest

from pairspark import tracking
from pairspark.errors import UsageError

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install 'pairspark[mlflow]'")


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh file: tracking store; MLFLOW_ALLOW_FILE_STORE unset (tracking sets it) and restored after."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    for name in ("MLFLOW_ALLOW_FILE_STORE", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.setenv(name, "")  # recorded, so the delete below is undone too
        monkeypatch.delenv(name)
    return tmp_path


def _client():
    return mlflow.tracking.MlflowClient()


def test_enabled_by_tracking_uri_or_experiment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert not tracking.tracking_enabled(None)
    assert tracking.tracking_enabled("catalog-nightly")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:/tmp/x")
    assert tracking.tracking_enabled(None)


def test_without_mlflow_installed_a_usage_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert not tracking.tracking_enabled(None)  # off: mlflow is not needed
    with pytest.raises(UsageError, match=r"pip install 'pairspark\[mlflow\]'"):
        tracking.tracking_enabled("catalog-nightly")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:/tmp/x")
    with pytest.raises(UsageError, match=r"pairspark\[mlflow\]"):
        tracking.tracking_enabled(None)
    with pytest.raises(UsageError, match=r"pairspark\[mlflow\]"):
        with tracking.tracked("run", None, {}):
            pass


def test_tracked_block_logs_params_metrics_and_artifacts(store):
    report_dir = store / "report"
    report_dir.mkdir()
    (report_dir / "metrics.json").write_text('{"counts": {"items": 3}}')
    (report_dir / "report.html").write_text("<html></html>")
    note = store / "note.txt"
    note.write_text("hello")
    settings = {"min_margin": "30%", "seed": 0, "partitions": None, "ratio_threshold": 1.2,
                "binary": "g=" + "c," * 400}

    with tracking.tracked("run", "catalog-nightly", settings) as t:
        assert tracking.active() is t
        t.metrics({"agreement.base.weighted_f1": 0.75, "counts.items": 3, "skipped": float("nan")})
        t.stage_seconds("fit", 1.25)
        t.artifact(str(report_dir))
        t.artifact(str(report_dir), "again")
        t.artifact(f"file:{note}", "notes")
        t.json({"a": 1}, "extra/a.json")
    assert tracking.active() is None

    run = _client().get_run(t.run_id)
    assert run.info.status == "FINISHED"
    assert _client().get_experiment(run.info.experiment_id).name == "catalog-nightly"
    assert run.data.tags["pairspark.command"] == "run"
    params = run.data.params
    assert params["min_margin"] == "30%" and params["seed"] == "0" and params["partitions"] == "null"
    assert params["ratio_threshold"] == "1.2"
    assert len(params["binary"]) == tracking.PARAM_VALUE_LIMIT and params["binary"].endswith("...")
    assert run.data.metrics == {"agreement.base.weighted_f1": 0.75, "counts.items": 3.0, "seconds.fit": 1.25}
    listed = {a.path for a in _client().list_artifacts(t.run_id)}
    assert listed == {"report", "again", "notes", "extra", "settings.json"}
    assert {a.path for a in _client().list_artifacts(t.run_id, "report")} == {"report/metrics.json", "report/report.html"}
    assert {a.path for a in _client().list_artifacts(t.run_id, "again")} == {"again/metrics.json", "again/report.html"}
    local = _client().download_artifacts(t.run_id, "", str(store / "down"))
    assert json.loads(open(f"{local}/settings.json").read())["binary"] == settings["binary"]  # in full
    assert open(f"{local}/notes/note.txt").read() == "hello"
    assert open(f"{local}/report/metrics.json").read() == '{"counts": {"items": 3}}'


def test_failing_block_ends_the_run_failed_and_reraises(store):
    with pytest.raises(ValueError, match="boom"):
        with tracking.tracked("fit", None, {"seed": 1}) as t:
            raise ValueError("boom")
    run = _client().get_run(t.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["pairspark.error"] == "ValueError: boom"
    assert mlflow.active_run() is None and tracking.active() is None


def test_a_tracked_block_inside_another_logs_to_the_outer_run(store):
    with tracking.tracked("run", None, {"seed": 0}) as outer:
        with tracking.tracked("fit", None, {"seed": 0}) as inner:
            inner.stage_seconds("fit", 2.0)
        assert inner is outer and mlflow.active_run().info.run_id == outer.run_id
    assert _client().get_run(outer.run_id).data.metrics == {"seconds.fit": 2.0}


def test_report_metrics_flattens_a_report_into_safe_names():
    scored = {"n": 10, "accuracy": 0.8, "weighted_f1": 0.75, "macro_f1": 0.7, "classes": ["a", "b"],
              "confusion": [[5, 1], [1, 3]], "per_class": {"a": {"f1": 0.8}}, "reference_column": "text_base",
              "rows_skipped_null": 0}
    report = {
        "counts": {"items": 10, "quarantined": 2, "quarantined_by_reason": {"image:wrong_length:3!=4": 2}},
        "agreement": {"reference_view": "text", "predicted_view": "image", "base": scored},
        "vs_label": {"image": {"pairwise": {**scored, "accuracy": 0.9}}},
    }
    metrics = tracking.report_metrics(report)
    assert metrics == {
        "counts.items": 10.0, "counts.quarantined": 2.0, "counts.quarantined_by_reason.image_wrong_length_3__4": 2.0,
        "agreement.base.n": 10.0, "agreement.base.accuracy": 0.8, "agreement.base.weighted_f1": 0.75,
        "agreement.base.macro_f1": 0.7, "agreement.base.rows_skipped_null": 0.0,
        "vs_label.image.pairwise.n": 10.0, "vs_label.image.pairwise.accuracy": 0.9,
        "vs_label.image.pairwise.weighted_f1": 0.75, "vs_label.image.pairwise.macro_f1": 0.7,
        "vs_label.image.pairwise.rows_skipped_null": 0.0,
    }
    clash = tracking.report_metrics({"counts": {"a:b": 1, "a;b": 2}})
    assert clash == {"counts.a_b": 1.0, "counts.a_b_2": 2.0}


def test_fitted_model_round_trip_through_mlflow_spark(spark, store):
    from pairspark import PairwiseTournamentClassifier, PairwiseTournamentModel
    from tests.synthetic import make_catalog, write_catalog

    items, classes, _ = make_catalog(120, 8, 3, seed=4)
    items_path, classes_path = write_catalog(store / "data", items, classes)
    frame = spark.read.parquet(items_path)
    model = PairwiseTournamentClassifier(classesPath=classes_path, views="image=image_embedding,text=text_embedding",
                                         methods="base,pairwise").fit(frame)
    with tracking.tracked("fit", None, {"methods": "base,pairwise"}) as t:
        uri = t.model(model, dfs_tmpdir=str(store / "dfs"))
    loaded = tracking.load_model(uri, dfs_tmpdir=str(store / "dfs-load"))

    assert isinstance(loaded, PairwiseTournamentModel)
    assert loaded.uid == model.uid and loaded.fitted_methods == ("base", "pairwise")
    before = model.transform(frame).orderBy("item_id").collect()
    after = loaded.transform(frame).orderBy("item_id").collect()
    assert before == after and len(after) == 120
    requirements = _client().download_artifacts(t.run_id, "model/requirements.txt", str(store / "req"))
    assert any(line.startswith("pyspark==") for line in open(requirements).read().split())


@pytest.mark.slow
def test_a_cli_run_is_logged_with_params_metrics_artifacts_and_the_model(store, spark, monkeypatch):
    import os
    import subprocess
    from pathlib import Path

    from tests.synthetic import make_catalog, write_catalog

    items, classes, _ = make_catalog(400, 8, 3, seed=5)
    items_path, classes_path = write_catalog(store / "data", items, classes)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "MLFLOW_TRACKING_URI": f"file:{store / 'mlruns'}"}
    command = [str(Path(sys.executable).parent / "pairspark"), "run", "--items", items_path, "--classes", classes_path,
               "--views", "image=image_embedding,text=text_embedding", "--out", str(store / "out"), "--label-col", "label",
               "--methods", "base,pairwise", "--master", "local[2]", "--experiment", "nightly"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the CLI's process set it for itself
    client = _client()
    (run,) = client.search_runs([client.get_experiment_by_name("nightly").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["pairspark.command"] == "run"
    assert run.data.params["ratio_threshold"] == "1.2" and run.data.params["methods"] == "base,pairwise"
    assert run.data.metrics["counts.items"] == 400 and "vs_label.image.pairwise.accuracy" in run.data.metrics
    assert {"seconds.fit", "seconds.classify", "seconds.evaluate"} <= set(run.data.metrics)
    logged = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/metrics.json", "report/report.html", "model_meta.json", "settings.json"} <= logged
    model = tracking.load_model(run.data.tags["pairspark.model_uri"])
    assert model.fitted_methods == ("base", "pairwise")
