"""The pyspark.ml API (Estimator, Model, save/load, inside a Pipeline) and the README's example."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import SQLTransformer

from pairspark import PairwiseTournamentClassifier, PairwiseTournamentModel
from tests.conftest import shared_set
from tests.synthetic import make_catalog, write_bad_catalog, write_catalog

pytestmark = pytest.mark.pyspark35  # also run on pyspark 3.5 by scripts/test
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(spark, tmp_path_factory):
    items, classes, _ = make_catalog(300, 8, 4, seed=21, noise=1.2)
    items_path, classes_path = write_catalog(tmp_path_factory.mktemp("api"), items, classes)
    return spark.read.parquet(items_path), classes_path


def _sorted(df):
    return df.toPandas().sort_values("item_id").reset_index(drop=True)


def test_fit_transform_adds_every_method_column_and_keeps_the_input(data):
    items, classes_path = data
    clf = PairwiseTournamentClassifier(classesPath=classes_path, views="image=image_embedding,text=text_embedding",
                                       methods="base,pairwise,gnb,cotrain", seed=3, minMargin="20%")
    model = clf.fit(items)
    assert isinstance(model, PairwiseTournamentModel) and model.primary_method() == "cotrain"
    assert model.getOrDefault(model.seed) == 3 and model.getOrDefault(model.minMargin) == "20%"
    out = model.transform(items)
    for column in items.columns:
        assert column in out.columns
    for view in ("image", "text"):
        for suffix in ("base", "pairwise", "gnb", "cotrain", "class", "base_cosine", "margin"):
            assert f"{view}_{suffix}" in out.columns
    pdf = _sorted(out)
    assert len(pdf) == items.count() and pdf["reason"].isna().all()
    assert (pdf["image_class"] == pdf["image_cotrain"]).all()


def test_model_save_load_round_trips_params_and_answers(data, tmp_path):
    items, classes_path = data
    model = PairwiseTournamentClassifier(classesPath=classes_path, views="image=image_embedding,text=text_embedding",
                                         methods="base,pairwise,cotrain").fit(items)
    model.write().overwrite().save(str(tmp_path / "m"))
    loaded = PairwiseTournamentModel.load(str(tmp_path / "m"))
    assert loaded.uid == model.uid and loaded.getOrDefault(loaded.methods) == "base,pairwise,cotrain"
    pd.testing.assert_frame_equal(_sorted(model.transform(items)), _sorted(loaded.transform(items)))


def test_inside_a_pipeline_with_save_and_load_of_the_fitted_pipeline(data, tmp_path):
    items, classes_path = data
    pipeline = Pipeline(stages=[
        SQLTransformer(statement="SELECT * FROM __THIS__ WHERE item_id IS NOT NULL"),
        PairwiseTournamentClassifier(classesPath=classes_path, views="image=image_embedding,text=text_embedding"),
    ])
    pipeline.write().overwrite().save(str(tmp_path / "pipeline"))
    fitted = Pipeline.load(str(tmp_path / "pipeline")).fit(items)
    fitted.write().overwrite().save(str(tmp_path / "fitted"))
    reloaded = PipelineModel.load(str(tmp_path / "fitted"))
    assert isinstance(reloaded.stages[1], PairwiseTournamentModel)
    a, b = _sorted(fitted.transform(items)), _sorted(reloaded.transform(items))
    pd.testing.assert_frame_equal(a, b)
    assert {"image_cotrain", "text_pairwise", "image_class"} <= set(a.columns)  # auto: base, pairwise, cotrain


def test_invalid_rows_come_back_with_a_reason_and_no_answer(spark, tmp_path):
    items_path, classes_path = write_bad_catalog(tmp_path / "bad")
    items = spark.read.parquet(items_path)
    model = PairwiseTournamentClassifier(classesPath=classes_path, views="image=image_embedding,text=text_embedding",
                                         methods="base,pairwise", minMargin="0").fit(items)
    pdf = model.transform(items).toPandas()
    assert len(pdf) == items.count()
    bad = pdf[pdf["reason"].notna()]
    assert len(bad) == len(pdf) - 2 and bad["image_class"].isna().all()
    assert set(pdf.loc[pdf["reason"].isna(), "item_id"]) == {"ok-1", "ok-2"}


def test_unknown_params_are_refused():
    with pytest.raises(TypeError, match="ratio"):
        PairwiseTournamentClassifier(ratio=1.3)


@pytest.mark.parametrize("param, value", [("ratioThreshold", float("nan")), ("minCosine", float("inf")), ("minDims", 0),
                                          ("candidates", 1), ("minMargin", "150%"), ("methods", "base,magic"),
                                          ("views", "a=x,b=y,c=z")])
def test_bad_param_values_are_refused_when_set(param, value):
    with pytest.raises(TypeError, match=param):
        PairwiseTournamentClassifier(**{param: value})


def test_every_param_has_its_own_doc_and_a_default_shown_by_explain_params():
    clf = PairwiseTournamentClassifier()
    docs = [p.doc for p in clf.params]
    assert len(set(docs)) == len(docs)
    explained = clf.explainParams()
    for param in clf.params:
        if param.name not in ("classesPath", "views", "labelsPath"):  # inputs: no default
            assert clf.hasDefault(param) and f"{param.name}: " in explained and "default: " in explained
            assert getattr(clf, f"get{param.name[0].upper()}{param.name[1:]}")() == clf.getOrDefault(param)


def _jobs_during(spark, action) -> int:
    tracker = spark.sparkContext.statusTracker()
    spark.sparkContext.setJobGroup("pairspark-count", "count jobs")
    try:
        action()
        return len(tracker.getJobIdsForGroup("pairspark-count"))
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)


def _session_conf(spark) -> tuple[dict, dict, dict]:
    """Everything a stage could change in the session: the static SparkConf, every runtime SQL
    setting with its current value (`SET -v`: defaults included) and the explicitly set ones (`SET`)."""
    every = {r["key"]: r["value"] for r in spark.sql("SET -v").collect()}
    explicit = {r["key"]: r["value"] for r in spark.sql("SET").collect()}
    return dict(spark.sparkContext.getConf().getAll()), every, explicit


def test_transform_runs_no_spark_job_and_fit_transform_leave_the_session_conf_alone(spark, data):
    items, classes_path = data
    before = _session_conf(spark)
    assert len(before[1]) > 100 and "spark.sql.execution.arrow.maxRecordsPerBatch" in before[1]
    model = PairwiseTournamentClassifier(classesPath=classes_path, views="image=image_embedding,text=text_embedding").fit(items)
    assert "cotrain" in model.fitted_methods  # the default methods: every pass and the calibration ran
    out = {}
    assert _jobs_during(spark, lambda: out.setdefault("df", model.transform(items))) == 0
    assert out["df"].where("reason IS NULL").count() == items.count()
    after = _session_conf(spark)
    for name, was, now in zip(("SparkConf", "SET -v", "SET"), before, after):
        changed = {k: (was.get(k), now.get(k)) for k in set(was) | set(now) if was.get(k) != now.get(k)}
        assert not changed, f"{name} changed: {changed}"


def test_the_python_side_sees_only_ids_keys_and_vectors(spark):
    df = spark.createDataFrame([("a", [1.0, 0.0], [0.0, 1.0], "x" * 10)], "item_id string, v array<double>, w array<double>, big string")
    from pairspark.spark.items import with_duplicate_flag
    from pairspark.spark.transform import answers_column
    from tests.synthetic import tiny_view_model

    column = answers_column([tiny_view_model("v", "v", 2)], ("base",), 0, 0, 3)
    plan = with_duplicate_flag(df).select(column.alias("answers"))._jdf.queryExecution().executedPlan().toString()
    python_inputs = [line for line in plan.splitlines() if "ArrowEvalPython" in line]
    assert python_inputs and all("big" not in line for line in python_inputs)


def test_the_readme_python_example_runs(spark, monkeypatch, tmp_path):
    shared_set("fashion_clip")
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "README.md should hold exactly one python example"
    monkeypatch.chdir(ROOT)
    code = blocks[0].replace('"runs/api-model"', repr(str(tmp_path / "api-model")))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert np.isfinite(scope["accuracy"]) and scope["accuracy"] > 0.85


def test_vectors_may_be_float_or_double_arrays_or_ml_vectors(spark, data):
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    items, classes_path = data
    clf = PairwiseTournamentClassifier(classesPath=classes_path, views="image=image_embedding,text=text_embedding",
                                       methods="base,pairwise,cotrain")
    doubles = items.select("item_id", *[F.col(c).cast("array<double>").alias(c) for c in ("image_embedding", "text_embedding")])
    vectors = items.select("item_id", *[array_to_vector(c).alias(c) for c in ("image_embedding", "text_embedding")])
    answers = ["item_id", "image_class", "text_class", "image_pairwise", "reason"]
    expected = _sorted(clf.fit(items).transform(items).select(*answers))
    for frame in (doubles, vectors):
        pd.testing.assert_frame_equal(_sorted(clf.fit(frame).transform(frame).select(*answers)), expected)


def test_an_unsupported_vector_type_is_named_with_its_column(spark, data):
    from pairspark.errors import UsageError

    items, classes_path = data
    model = PairwiseTournamentClassifier(classesPath=classes_path, views="image=image_embedding,text=text_embedding",
                                         methods="base").fit(items)
    strings = items.withColumn("image_embedding", items["image_embedding"].cast("array<string>"))
    with pytest.raises(UsageError, match=r"image_embedding must be array<float>, array<double> or a pyspark.ml Vector, got array<string>"):
        model.transform(strings)
