"""The pyspark.ml API: PairwiseTournamentClassifier (Estimator) and PairwiseTournamentModel
(Model), with save/load, usable inside a pyspark.ml Pipeline, on a classic or a Spark Connect
session. The CLI's stages (pairspark/pipeline/) run through these two classes: fit through
`fit_items`, classify through `transform` or, for Parquet items read by pyarrow, `transform_scan`;
both readers call transform's one per-batch function (spark/transform.batch_answers): one
implementation.

    from pairspark import PairwiseTournamentClassifier
    clf = PairwiseTournamentClassifier(classesPath="classes.parquet",
                                       views="image=image_embedding,text=text_embedding")
    model = clf.fit(items)              # items: a DataFrame in the shared data format
    model.transform(items)              # lazy: + image_class, text_class, ... and `reason`
    model.write().overwrite().save(p)   # PairwiseTournamentModel.load(p) reads it back

The Params (params.py) hold every setting, with their defaults: `explainParams()` lists them.
fit reads the items (it is eager, like every Estimator); transform only builds a column
expression (spark/transform.py). Neither changes the session's configuration.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.util import MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import DataFrame

from pairspark.version import __version__
from pairspark.core.methods import primary_method
from pairspark.errors import UsageError
from pairspark.params import HasPairsparkParams
from pairspark.spark.arrow_scan import ArrowScan
from pairspark.spark.fit import fit_views
from pairspark.spark.io import arrow_batch_rows, load_classes, read_labels, require_rows, with_verified
from pairspark.spark.items import check_item_dims, marked_vectors, require_item_columns
from pairspark.spark.model_io import load_model, model_view_meta, read_metadata, save_model, tree_meta, write_metadata
from pairspark.spark.passes import FrameRows
from pairspark.spark.transform import answer_columns, transform_items
from pairspark.views import parse_views

log = logging.getLogger("pairspark")


class PairwiseTournamentClassifier(Estimator, HasPairsparkParams, MLReadable, MLWritable):
    """Fits, per view, the confident class statistics, the pair masks and the scorers of the
    iterative methods. Rows that fail validation are skipped (the model's transform gives them a
    `reason`). Keyword arguments set Params; one left out (or None) keeps its default, declared in
    params.py."""

    @keyword_only
    def __init__(self, *, classesPath: str | None = None, classesFormat: str | None = None, views: str | None = None,
                 labelsPath: str | None = None, methods: str | None = None, ratioThreshold: float | None = None, minDims: int | None = None,
                 maxDims: int | None = None, minClassCount: int | None = None, minCosine: float | None = None,
                 minMargin: str | None = None, seed: int | None = None, candidates: int | str | None = None,
                 topK: int | None = None, backoffAt: float | None = None):
        super().__init__()
        self._set(**{k: v for k, v in self._input_kwargs.items() if v is not None})

    @keyword_only
    def setParams(self, *, classesPath: str | None = None, classesFormat: str | None = None, views: str | None = None,
                  labelsPath: str | None = None, methods: str | None = None, ratioThreshold: float | None = None, minDims: int | None = None,
                  maxDims: int | None = None, minClassCount: int | None = None, minCosine: float | None = None,
                  minMargin: str | None = None, seed: int | None = None, candidates: int | str | None = None,
                  topK: int | None = None, backoffAt: float | None = None) -> PairwiseTournamentClassifier:
        return self._set(**{k: v for k, v in self._input_kwargs.items() if v is not None})

    def setClassesPath(self, value: str) -> PairwiseTournamentClassifier:
        return self._set(classesPath=value)

    def setClassesFormat(self, value: str) -> PairwiseTournamentClassifier:
        return self._set(classesFormat=value)

    def setViews(self, value: str) -> PairwiseTournamentClassifier:
        return self._set(views=value)

    def setLabelsPath(self, value: str) -> PairwiseTournamentClassifier:
        return self._set(labelsPath=value)

    def setMethods(self, value: str) -> PairwiseTournamentClassifier:
        return self._set(methods=value)

    def setRatioThreshold(self, value: float) -> PairwiseTournamentClassifier:
        return self._set(ratioThreshold=value)

    def setMinDims(self, value: int) -> PairwiseTournamentClassifier:
        return self._set(minDims=value)

    def setMaxDims(self, value: int) -> PairwiseTournamentClassifier:
        return self._set(maxDims=value)

    def setMinClassCount(self, value: int) -> PairwiseTournamentClassifier:
        return self._set(minClassCount=value)

    def setMinCosine(self, value: float) -> PairwiseTournamentClassifier:
        return self._set(minCosine=value)

    def setMinMargin(self, value: str) -> PairwiseTournamentClassifier:
        return self._set(minMargin=value)

    def setSeed(self, value: int) -> PairwiseTournamentClassifier:
        return self._set(seed=value)

    def setCandidates(self, value: int | str) -> PairwiseTournamentClassifier:
        return self._set(candidates=value)

    def setTopK(self, value: int) -> PairwiseTournamentClassifier:
        return self._set(topK=value)

    def setBackoffAt(self, value: float) -> PairwiseTournamentClassifier:
        return self._set(backoffAt=value)

    def _fit(self, dataset: DataFrame) -> PairwiseTournamentModel:
        return self.fit_items(dataset)

    def fit_items(self, dataset: DataFrame, scan: ArrowScan | None = None) -> PairwiseTournamentModel:
        """fit(dataset); with `scan` (spark/arrow_scan.eligibility of the same Parquet items, the
        CLI's), the passes read the vectors with pyarrow in the workers: the same statistics, summed
        per row group instead of per Spark partition."""
        if not self.isDefined(self.views) or not self.isDefined(self.classesPath):
            raise UsageError("set classesPath and views, e.g. views='image=image_embedding,text=text_embedding'")
        self.check_settings()
        views = parse_views(self.getViews())
        spark = dataset.sparkSession
        tables = load_classes(spark, self.getClassesPath(), views, self.classes_format())
        dims = {n: t.dim for n, t in tables.items()}
        require_item_columns(dataset, views)
        require_rows(dataset, "items")
        check_item_dims(dataset, views, dims)
        methods = self.method_list(len(views))
        columns = list(dict.fromkeys(v.column for v in views))
        marked = marked_vectors(dataset, views)
        labels_meta, labels = None, None
        if self.labels_path():
            labels = read_labels(spark, self.labels_path(), tables[views[0].name].class_ids)
            marked, labels_meta = with_verified(marked, labels)
            labels_meta = {"path": self.labels_path(), **labels_meta}
            if labels_meta["not_among_items"]:
                log.warning("labels: %d of %d labelled item_ids are not among the items", labels_meta["not_among_items"],
                            labels_meta["given"])
        start = time.perf_counter()
        # the sample's fraction: a row count reads no vector (a plain Parquet scan answers it from
        # its footers; a derived DataFrame pays one job without the vector columns)
        rows = scan.fit_rows(columns, labels, arrow_batch_rows(spark)) if scan is not None else None
        if scan is not None and rows is None:
            log.info("fit: Spark's reader (over a million item ids repeat)")
        result = fit_views(rows or FrameRows(marked), views, tables, self, methods, dataset.count())
        if result.valid_items == 0:
            raise UsageError("the items have no valid rows to fit on (see the reasons transform gives them)")
        meta = {
            "views": [model_view_meta(v, result.confident_items[v.name]) for v in result.views],
            "methods": list(methods),
            "method_fits": result.method_fits,
            "calibration": result.calibration,
            "mask_settings": vars(self.mask_settings()),
            "counts": {"valid_items": result.valid_items},
            **({"labels": labels_meta} if labels_meta else {}),
            # classes given several prompt rows (their vectors are the rows' unit mean)
            "prompts": {"rows": int(sum(tables[views[0].name].prompts)), "classes": len(tables[views[0].name].class_ids),
                        "most_per_class": int(max(tables[views[0].name].prompts))},
            **({"tree": tree_meta(tables[views[0].name].tree)} if tables[views[0].name].tree else {}),
            "fit_seconds": round(time.perf_counter() - start, 2),
            "reads": result.reads,  # reads of the items' vectors (the sample's draw, then each pass)
            "reader": "spark" if rows is None else "arrow",  # who read them (spark/arrow_scan.ArrowRows)
            "pairspark_version": __version__,
        }
        model = PairwiseTournamentModel(result.views, meta)
        self._copyValues(model)
        return model.setMethods(",".join(methods))

    def write(self) -> MLWriter:
        return _Writer(self)

    @classmethod
    def read(cls) -> MLReader:
        return _Reader(cls)


class PairwiseTournamentModel(Model, HasPairsparkParams, MLReadable, MLWritable):
    """Adds, per view, NAME_<method> for every method in `methods`, NAME_class (the primary
    method's answer), NAME_base_cosine and NAME_margin, then `reason` (why a row could not be
    classified, its answers then null). Input columns are kept. `methods`, `seed` and
    `candidates` act here; the other Params record what the model was fitted with."""

    def __init__(self, view_models: list | None = None, meta: dict | None = None):
        super().__init__()
        self.view_models = view_models or []
        self.meta = meta or {}

    def setMethods(self, value: str) -> PairwiseTournamentModel:
        return self._set(methods=value)

    def setSeed(self, value: int) -> PairwiseTournamentModel:
        return self._set(seed=value)

    def setCandidates(self, value: int | str) -> PairwiseTournamentModel:
        return self._set(candidates=value)

    def setTopK(self, value: int) -> PairwiseTournamentModel:
        return self._set(topK=value)

    def setBackoffAt(self, value: float) -> PairwiseTournamentModel:
        return self._set(backoffAt=value)

    @property
    def fitted_methods(self) -> tuple[str, ...]:
        return tuple(self.meta.get("methods", ()))

    @property
    def run_methods(self) -> tuple[str, ...]:
        """The methods transform computes (the methods Param; auto: the fitted ones)."""
        chosen = self.getMethods()
        methods = self.fitted_methods if chosen == "auto" else tuple(chosen.split(","))
        unfitted = [m for m in methods if m not in self.fitted_methods and self._needs_fit(m)]
        if unfitted:
            raise UsageError(f"the model was not fitted for {', '.join(unfitted)}: refit with methods={','.join(methods)}")
        return methods

    def _needs_fit(self, method: str) -> bool:
        from pairspark.core.methods import REGISTRY

        return REGISTRY[method].iterative or REGISTRY[method].min_views > len(self.view_models)

    def primary_method(self) -> str:
        return primary_method(self.run_methods)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        return transform_items(dataset, self.view_models, self.run_methods, self.getSeed(), self.getCandidates(),
                               self.getTopK(), self.getBackoffAt())

    def transform_scan(self, scan: ArrowScan, id_column: str, label: tuple[str, str] | None) -> DataFrame:
        """transform's answers for Parquet items read by pyarrow in the workers, the CLI's reader
        (`scan`: spark/arrow_scan.eligibility of the items), lazily: per item row `id_column`
        (item_id as a string), the label as a string (label: (items column, output name)),
        answer_fields (duplicates set aside last, as in core/validate.py), and the row's FILE and ROW."""
        methods = self.run_methods
        classified = scan.classified(self.view_models, methods, self.getSeed(), self.getCandidates(), self.getTopK(),
                                     id_column, label, arrow_batch_rows(scan.items.sparkSession), self.getBackoffAt())
        return scan.with_duplicates(classified, id_column, answer_columns(self.view_models, methods))

    def write(self) -> MLWriter:
        return _Writer(self)

    @classmethod
    def read(cls) -> MLReader:
        return _Reader(cls)


def _params_metadata(instance: HasPairsparkParams, spark) -> dict[str, Any]:
    """pyspark.ml's metadata layout (DefaultParamsWriter), so a Pipeline can find the stage."""
    return {
        "class": f"{type(instance).__module__}.{type(instance).__name__}",
        "timestamp": int(round(time.time() * 1000)),
        "sparkVersion": spark.version,
        "uid": instance.uid,
        "paramMap": {p.name: v for p, v in instance._paramMap.items()},
        "defaultParamMap": {p.name: v for p, v in instance._defaultParamMap.items()},
    }


class _Writer(MLWriter):
    """Writes through DataFrames only; overwrite replaces each part (no JVM file-system call,
    which pyspark's own MLWriter.overwrite makes and Spark Connect does not allow)."""

    def __init__(self, instance: HasPairsparkParams):
        super().__init__()
        self.instance = instance

    def save(self, path: str) -> None:
        self.saveImpl(path)

    def saveImpl(self, path: str) -> None:
        spark = self.sparkSession
        metadata = _params_metadata(self.instance, spark)
        mode = "overwrite" if self.shouldOverwrite else "error"
        if isinstance(self.instance, PairwiseTournamentModel):
            metadata["pairspark"] = self.instance.meta
            save_model(spark, self.instance.view_models, metadata, path, self.shouldOverwrite)
        else:
            write_metadata(spark, metadata, path, mode)


class _Reader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str):
        spark = self.sparkSession
        if issubclass(self.cls, PairwiseTournamentModel):
            view_models, metadata = load_model(spark, path)
            instance = self.cls(view_models, metadata["pairspark"])
        else:
            metadata = read_metadata(spark, path)
            instance = self.cls()
        instance._resetUid(metadata["uid"])
        for name, value in metadata.get("paramMap", {}).items():
            if instance.hasParam(name):
                instance._set(**{name: value})
        return instance

