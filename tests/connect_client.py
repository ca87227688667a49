"""The pyspark.ml API over Spark Connect: run in its own process by tests/test_connect.py.

    python tests/connect_client.py --remote sc://127.0.0.1:PORT --smoke
    python tests/connect_client.py --remote sc://127.0.0.1:PORT --items P --params JSON --out DIR

One SparkSession per process: this one is a Connect client (no JVM here), the pytest process
holds a classic session. `run_api` is also what the test runs on its classic session, so both
sides take exactly the same steps: fit, transform, save/load of the model, save/load of the estimator, and the
loaded estimator inside a Pipeline (the Pipeline saved and loaded, fitted, the PipelineModel
saved and loaded). Each step's answers (ANSWER_SUFFIXES columns) go to OUT/answers/<name> as
Parquet, the saved models and pipelines to OUT/saved/.

Progress goes to stdout as `STAGE name` lines; on an error the last stderr line is
`CLIENT FAILED at stage NAME: Type: message` (the full traceback above it), exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

# every output column of a view: its answers, and how sure the primary is (cosine, margin, confidence, top-k)
ANSWER_SUFFIXES = ("_class", "_base", "_pairwise", "_cotrain", "_base_cosine", "_margin", "_confidence", "_top",
                   "_path", "_backoff")  # the last two (and _path_confidence) with a class tree
OUTPUTS = ("fitted", "loaded", "pipeline", "pipeline_loaded")

_stage = "start"
_began = time.monotonic()


def stage(name: str) -> None:
    global _stage
    _stage = name
    print(f"STAGE {name} (at {time.monotonic() - _began:.1f} s)", flush=True)


def answer_columns(columns: list[str]) -> list[str]:
    """item_id, every NAME_<suffix> column of ANSWER_SUFFIXES (in order), reason."""
    return ["item_id", *[c for c in columns if c.endswith(ANSWER_SUFFIXES)], "reason"]


def _write_answers(df, path: Path) -> None:
    df.select(*answer_columns(df.columns)).write.mode("overwrite").parquet(str(path))


def run_api(spark, items_path: str, params: dict, out: Path) -> None:
    """Fit, transform, save and load, alone and in a Pipeline; answers to out/answers/<OUTPUTS>."""
    stage("import")
    from pyspark.ml import Pipeline, PipelineModel

    from pairspark import PairwiseTournamentClassifier, PairwiseTournamentModel

    out.mkdir(parents=True, exist_ok=True)
    stage("read")
    items = spark.read.parquet(items_path)

    stage("fit")
    model = PairwiseTournamentClassifier(**params).fit(items)
    stage("transform")
    _write_answers(model.transform(items), out / "answers" / "fitted")
    stage("model_save")
    model.write().overwrite().save(str(out / "saved" / "model"))
    stage("model_load")
    loaded = PairwiseTournamentModel.load(str(out / "saved" / "model"))
    stage("loaded_transform")
    _write_answers(loaded.transform(items), out / "answers" / "loaded")

    stage("estimator_save")
    PairwiseTournamentClassifier(**params).write().overwrite().save(str(out / "saved" / "estimator"))
    stage("estimator_load")
    estimator = PairwiseTournamentClassifier.load(str(out / "saved" / "estimator"))

    stage("pipeline_save")
    Pipeline(stages=[estimator]).write().overwrite().save(str(out / "saved" / "pipeline"))
    stage("pipeline_load")
    pipeline = Pipeline.load(str(out / "saved" / "pipeline"))
    stage("pipeline_fit")
    fitted = pipeline.fit(items)
    stage("pipeline_transform")
    _write_answers(fitted.transform(items), out / "answers" / "pipeline")
    stage("pipeline_model_save")
    fitted.write().overwrite().save(str(out / "saved" / "pipeline_model"))
    stage("pipeline_model_load")
    reloaded = PipelineModel.load(str(out / "saved" / "pipeline_model"))
    if not isinstance(reloaded.stages[-1], PairwiseTournamentModel):
        raise TypeError(f"the loaded PipelineModel's stage is a {type(reloaded.stages[-1]).__name__}")
    stage("pipeline_loaded_transform")
    _write_answers(reloaded.transform(items), out / "answers" / "pipeline_loaded")


def run_large_model(spark, items_path: str, params: dict, out: Path) -> None:
    """Fit a model too large for one Connect request, transform with it, save, load and transform
    again: answers to out/answers/large_fitted and large_loaded."""
    from pairspark import PairwiseTournamentClassifier, PairwiseTournamentModel

    stage("large_fit")
    items = spark.read.parquet(items_path)
    model = PairwiseTournamentClassifier(**params).fit(items)
    stage("large_transform")
    _write_answers(model.transform(items), out / "answers" / "large_fitted")
    stage("large_save")
    model.write().overwrite().save(str(out / "saved" / "large"))
    stage("large_load")
    loaded = PairwiseTournamentModel.load(str(out / "saved" / "large"))
    stage("large_loaded_transform")
    _write_answers(loaded.transform(items), out / "answers" / "large_loaded")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--remote", required=True, help="sc://HOST:PORT")
    parser.add_argument("--smoke", action="store_true", help="only check a trivial query over Connect")
    parser.add_argument("--items")
    parser.add_argument("--params", help="the classifier's Params as JSON")
    parser.add_argument("--out")
    parser.add_argument("--large", action="store_true", help="run_large_model instead of run_api")
    args = parser.parse_args(argv)
    try:
        stage("connect")
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.remote(args.remote).getOrCreate()
        if type(spark).__module__ != "pyspark.sql.connect.session":
            raise TypeError(f"not a Spark Connect session: {type(spark)}")
        stage("smoke")
        count = spark.range(5).count()
        if count != 5:
            raise AssertionError(f"spark.range(5).count() = {count}")
        print(f"SMOKE ok: spark.range(5).count() = {count} over {args.remote} "
              f"(Spark {spark.version}, {time.monotonic() - _began:.1f} s)", flush=True)
        if args.large:
            run_large_model(spark, args.items, json.loads(args.params), Path(args.out))
        elif not args.smoke:
            run_api(spark, args.items, json.loads(args.params), Path(args.out))
        stage("done")
        print(f"DONE in {time.monotonic() - _began:.1f} s", flush=True)
        return 0
    except BaseException as error:  # noqa: BLE001 - report everything, stage included
        traceback.print_exc()
        first = "\n".join(str(error).strip().splitlines()[:12])
        print(f"CLIENT FAILED at stage {_stage}: {type(error).__name__}: {first}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
