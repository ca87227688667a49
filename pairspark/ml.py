"""The pyspark.ml API: PairwiseTournamentClassifier (Estimator) and PairwiseTournamentModel
(Transformer), with save/load, usable inside a pyspark.ml Pipeline. The CLI stages run through
these two classes (pipeline.py), so there is one implementation.

    from pairspark import PairwiseTournamentClassifier
    clf = PairwiseTournamentClassifier(classesPath="classes.parquet",
                                       views="image=image_embedding,text=text_embedding")
    model = clf.fit(items)              # items: a DataFrame in the shared data format
    model.transform(items)              # + image_class, text_class, ... and a `reason` column
    model.write().overwrite().save(p)   # PairwiseTournamentModel.load(p) reads it back

Params mirror the CLI options in camelCase (conf/default.toml has their meaning and defaults).
"""

from __future__ import annotations

from dataclasses import fields

from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsReader, DefaultParamsWritable, DefaultParamsWriter, MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pairspark.config import Settings, View, load_settings, parse_views
from pairspark.core.model import ITERATIVE_METHODS, ViewModel, default_methods, primary_method
from pairspark.errors import InvalidRowsError, UsageError
from pairspark.spark.classify import ORIGINAL, classify_items, prediction_fields
from pairspark.spark.fit import fit_views
from pairspark.spark.io import DUPLICATE, ITEM_ID, REASON, check_item_dims, first_invalid, load_classes, mark_duplicates, require_rows
from pairspark.spark.model_io import load_model, model_view_meta, save_model

_NOT_PARAMS = {"master"}  # session-level, not a property of a model
_CLASSIFY_TIME = ("seed", "candidates", "arrow_batch_size", "partitions", "on_invalid", "output_files")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


_SETTING_PARAMS = {f.name: _camel(f.name) for f in fields(Settings) if f.name not in _NOT_PARAMS}


class _PairsparkParams(Params):
    classesPath = Param(Params._dummy(), "classesPath", "the classes table (Parquet path)", TypeConverters.toString)
    views = Param(Params._dummy(), "views", "NAME=COL[,NAME=COL]: view name (classes column) = items column",
                  TypeConverters.toString)

    def settings(self) -> Settings:
        """The Params as a validated Settings (unset ones take the defaults)."""
        overrides = {}
        for name, camel in _SETTING_PARAMS.items():
            if self.isDefined(getattr(self, camel)):
                overrides[name] = self.getOrDefault(getattr(self, camel))
        return load_settings(None, overrides)

    def view_specs(self) -> list[View]:
        if not self.isDefined(self.views):
            raise UsageError("set views, e.g. views='image=image_embedding,text=text_embedding'")
        return parse_views(self.getOrDefault(self.views))

    def _set_from(self, kwargs: dict) -> None:
        for key, value in kwargs.items():
            if value is None:
                continue
            if not self.hasParam(key):
                raise UsageError(f"unknown param {key!r}; params: classesPath, views, {', '.join(_SETTING_PARAMS.values())}")
            if key in ("methods",) and isinstance(value, (list, tuple)):
                value = ",".join(value)
            if key == "minMargin":
                value = str(value)
            self._set(**{key: value})


def _params_of(settings) -> dict:
    """{camelCaseParam: value} of a Settings (or a dict of setting names), None values left out."""
    values = settings.to_json() if isinstance(settings, Settings) else dict(settings)
    if isinstance(values.get("methods"), tuple):
        values["methods"] = ",".join(values["methods"])
    return {_SETTING_PARAMS[k]: v for k, v in values.items() if k in _SETTING_PARAMS and v is not None}


def _converter(name: str):
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if "float" in str(kind):
        return TypeConverters.toFloat
    if "int" in str(kind):
        return TypeConverters.toInt
    return TypeConverters.toString


# One Param per setting, declared on the class as pyspark.ml expects (Params copies them per instance).
for _name, _camel_name in _SETTING_PARAMS.items():
    setattr(_PairsparkParams, _camel_name,
            Param(Params._dummy(), _camel_name, f"pairspark setting {_name} (conf/default.toml)", _converter(_name)))


class PairwiseTournamentClassifier(Estimator, _PairsparkParams, DefaultParamsReadable, DefaultParamsWritable):
    """Fits the per-view class statistics, pair masks and the iterative methods' scorers."""

    def __init__(self, **kwargs):
        super().__init__()
        self._set_from(kwargs)
        self.source = "the items"  # how error messages name the input (pipeline.fit: its path)

    @classmethod
    def from_settings(cls, settings: Settings, classes_path: str, views: list[View], source: str | None = None):
        """The estimator for a Settings object (what the CLI builds from flags and TOML)."""
        estimator = cls(classesPath=classes_path, views=",".join(f"{v.name}={v.column}" for v in views))
        estimator._set_from(_params_of(settings))
        if source:
            estimator.source = source
        return estimator

    def setParams(self, **kwargs) -> PairwiseTournamentClassifier:
        self._set_from(kwargs)
        return self

    def _fit(self, dataset: DataFrame) -> PairwiseTournamentModel:
        settings, views = self.settings(), self.view_specs()
        if not self.isDefined(self.classesPath):
            raise UsageError("set classesPath (the classes table)")
        spark = dataset.sparkSession
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(settings.arrow_batch_size))
        tables = load_classes(spark, self.getOrDefault(self.classesPath), views)
        marked = _marked(dataset, views, {n: t.dim for n, t in tables.items()})
        if settings.on_invalid == "error":
            _stop_on_bad_rows(first_invalid(marked, views, {n: t.dim for n, t in tables.items()}), self.source)
        columns = [ITEM_ID, *dict.fromkeys(v.column for v in views), DUPLICATE]
        selected = marked.select(*columns)
        if settings.partitions:
            selected = selected.repartition(settings.partitions)
        methods = settings.methods or default_methods(len(views))
        result = fit_views(selected, views, tables, settings, methods)
        if result.valid_items == 0:
            raise UsageError(f"items table {self.source} has no valid rows to fit on (see the quarantine reasons)")
        meta = {
            "settings": settings.to_json(),
            "views": [model_view_meta(v, result.confident_items[v.name]) for v in result.views],
            "views_spec": ",".join(f"{v.name}={v.column}" for v in views),
            "methods": list(methods),
            "method_fits": result.method_fits,
            "counts": {"valid_items": result.valid_items},
        }
        model = PairwiseTournamentModel(result.views, meta)
        return self._copyValues(model)


class PairwiseTournamentModel(Model, _PairsparkParams, MLReadable, MLWritable):
    """Adds, per view, NAME_<method> for every fitted method, NAME_class (the primary method's
    answer), NAME_base_cosine and NAME_margin, and `reason` (why a row could not be classified;
    its prediction columns are then null). Input columns are kept."""

    def __init__(self, view_models: list[ViewModel] | None = None, meta: dict | None = None):
        super().__init__()
        self.view_models = view_models or []
        self.meta = meta or {}

    @classmethod
    def from_dir(cls, spark: SparkSession, path: str) -> PairwiseTournamentModel:
        """A model directory written by `pairspark fit` or by write().save (Params from meta.json)."""
        view_models, meta = load_model(spark, path)
        model = cls(view_models, meta)
        model._set_from(_params_of(meta.get("settings", {})))
        if meta.get("views_spec"):
            model._set(views=meta["views_spec"])
        return model

    def apply_settings(self, settings: Settings) -> None:
        """A classify run's own settings: those that act at classification time (what fit
        decided, masks and scorers, stays); methods only when given (else the fitted ones)."""
        chosen = {k: getattr(settings, k) for k in _CLASSIFY_TIME}
        if settings.methods:
            chosen["methods"] = settings.methods
        self._set_from(_params_of(chosen))

    @property
    def run_methods(self) -> tuple[str, ...]:
        """The methods transform computes: the methods Param, else the fitted ones."""
        chosen = self.settings().methods
        return tuple(chosen or self.meta.get("methods") or default_methods(len(self.view_models)))

    def classified(self, dataset: DataFrame, label_col: str | None = None, keep_input: bool = False,
                   methods: tuple[str, ...] | None = None) -> DataFrame:
        """classify_items over the items (see spark/classify.py): prediction columns, REASON and,
        for invalid rows (every row with keep_input), the input columns in ORIGINAL."""
        settings = self.settings()
        methods = methods or self.run_methods
        unfitted = [m for m in methods if m in ITERATIVE_METHODS and m not in self.view_models[0].scorers]
        if unfitted:
            raise UsageError(f"the model was not fitted for {', '.join(unfitted)}: refit with methods={','.join(methods)}")
        spark = dataset.sparkSession
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(settings.arrow_batch_size))
        specs = [View(v.name, v.column) for v in self.view_models]
        marked = _marked(dataset, specs, {v.name: v.dim for v in self.view_models})
        if settings.partitions:
            marked = marked.repartition(settings.partitions)
        return classify_items(spark, marked, self.view_models, methods, settings.seed, label_col, settings.candidates,
                              keep_input)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        methods = self.run_methods
        result = self.classified(dataset, keep_input=True, methods=methods)
        added = [f.name for f in prediction_fields(self.view_models, methods, None) if f.name != ITEM_ID]
        return result.select(f"{ORIGINAL}.*", *added, REASON)

    def primary_method(self) -> str:
        return primary_method(self.run_methods)

    def write(self) -> MLWriter:
        return _ModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _ModelReader(cls)


class _ModelWriter(MLWriter):
    def __init__(self, instance: PairwiseTournamentModel):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sparkSession)
        save_model(self.sparkSession, self.instance.view_models, self.instance.meta, path)


class _ModelReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> PairwiseTournamentModel:
        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        model = self.cls.from_dir(self.sparkSession, path)
        model._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(model, metadata)
        return model


def _marked(dataset: DataFrame, views: list[View], dims: dict[str, int]) -> DataFrame:
    require_rows(dataset, "items")
    marked = mark_duplicates(dataset, views)
    check_item_dims(marked, views, dims)
    return marked


def _stop_on_bad_rows(bad: list[tuple[str, str]], where: str = "the items") -> None:
    if bad:
        shown = ", ".join(f"item_id={item!r} ({reason})" for item, reason in bad)
        raise InvalidRowsError(f"invalid item rows in {where}, first: {shown}; use --on-invalid quarantine to set them aside")


def stop_on_bad_rows(result: DataFrame, where: str) -> None:
    """With on_invalid=error: raise naming the first three invalid rows of a classified result."""
    bad = result.where(F.col(REASON).isNotNull()).select(ITEM_ID, REASON)
    _stop_on_bad_rows([(r[ITEM_ID], r[REASON]) for r in bad.orderBy(F.col(ITEM_ID).asc_nulls_first()).limit(3).collect()], where)
