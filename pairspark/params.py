"""Every modelling setting, declared once, as a pyspark.ml Param.

This mixin is the single source of the estimator's and the model's settings: the CLI builds its
flags (name, help, default) from it, the TOML file's `[pairspark]` keys are its Params in
snake_case, and conf/default.toml is checked against it by a test. Settings that only the CLI
uses (master, output files, publishing) are not Params: they live in cli.py.

Each Param has its own documentation, a type converter that validates (a bad value raises
TypeError, which the CLI turns into a one-line error), and a default set with `_setDefault`, so
`explainParams()` shows it and `getOrDefault` never fails. The pattern is pyspark's own
(`NaiveBayes` in pyspark/ml/classification.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pyspark.ml.param import Param, Params, TypeConverters

from pairspark.core.masks import MaskSettings
from pairspark.core.methods import METHODS, default_methods


@dataclass(frozen=True)
class MarginRule:
    """minMargin: an absolute cosine margin, or a quantile of the view's margins ('30%')."""

    value: float
    is_quantile: bool = False

    @classmethod
    def parse(cls, raw: Any) -> MarginRule:
        if isinstance(raw, MarginRule):
            return raw
        text = str(raw).strip()
        try:
            if text.endswith("%"):
                q = float(text[:-1]) / 100.0
                if not (math.isfinite(q) and 0.0 <= q < 1.0):
                    raise ValueError
                return cls(q, True)
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return cls(value, False)
        except ValueError:
            raise TypeError(f"must be a finite number or a percentage in [0%, 100%), got {raw!r}") from None

    def __str__(self) -> str:
        return f"{self.value * 100:g}%" if self.is_quantile else f"{self.value:g}"


def _number(value: Any) -> float:
    """A number as a user gives it: a float or int (a Param, TOML), or its text (a CLI flag:
    argparse hands every flag over as a string, which pyspark's TypeConverters refuse)."""
    if isinstance(value, bool):
        raise TypeError(f"must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise TypeError(f"must be a number, got {value!r}") from None
    try:
        return float(TypeConverters.toFloat(value))
    except TypeError:
        raise TypeError(f"must be a number, got {value!r}") from None


def _finite_float(value: Any) -> float:
    number = _number(value)
    if not math.isfinite(number):
        raise TypeError(f"must be a finite number, got {value!r}")
    return number


def _float_in(low: float, high: float):
    def convert(value: Any) -> float:
        number = _finite_float(value)
        if not low <= number <= high:
            raise TypeError(f"must be a number in [{low:g}, {high:g}], got {value!r}")
        return number

    return convert


def _int_at_least(low: int):
    def convert(value: Any) -> int:
        try:
            number = _number(value)
        except TypeError:
            raise TypeError(f"must be an integer, got {value!r}") from None
        if not math.isfinite(number) or number != int(number):
            raise TypeError(f"must be an integer, got {value!r}")
        if number < low:
            raise TypeError(f"must be an integer >= {low}, got {value!r}")
        return int(number)

    return convert


def _candidates(value: Any) -> int | str:
    if value == "auto":
        return "auto"
    try:
        number = _int_at_least(0)(value)
    except TypeError:
        number = None
    if number is None or number == 1:
        raise TypeError(f"must be auto, 0 (every class) or an integer >= 2, got {value!r}")
    return number


def _margin(value: Any) -> str:
    return str(MarginRule.parse(value))


def _methods(value: Any) -> str:
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(m).strip() for m in items if str(m).strip()]
    if names == ["auto"]:
        return "auto"
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names or len(set(names)) != len(names):
        raise TypeError(f"must be auto or a list of distinct methods among {','.join(METHODS)}, got {value!r}")
    return ",".join(names)


def _views(value: Any) -> str:
    from pairspark.errors import UsageError
    from pairspark.views import format_views, parse_views

    try:
        return format_views(parse_views(str(value)))
    except UsageError as exc:
        raise TypeError(str(exc)) from None


class HasPairsparkParams(Params):
    """The Params of PairwiseTournamentClassifier and PairwiseTournamentModel."""

    classesPath = Param(
        Params._dummy(), "classesPath",
        "the classes table: a path (see classesFormat) or table:NAME, with class_id and one prompt-vector "
        "column per view (array<float>, array<double> or a pyspark.ml Vector)",
        typeConverter=TypeConverters.toString)
    classesFormat = Param(
        Params._dummy(), "classesFormat",
        "the format of classesPath when it is a path: parquet, or any format spark.read knows (orc, json...); "
        "classesPath may also be table:NAME, a table of the session's catalog",
        typeConverter=TypeConverters.toString)
    labelsPath = Param(
        Params._dummy(), "labelsPath",
        "fit: verified labels, a Parquet or CSV (.csv) file with columns item_id and label (a class_id); "
        "each labelled item is a fixed training item of every learning method (weighted as 5 "
        "pseudo-labelled ones), and of the confident statistics behind the masks",
        typeConverter=TypeConverters.toString)
    views = Param(
        Params._dummy(), "views",
        "NAME=COL[,NAME=COL]: one or two views; NAME is the classes table's column, COL the items' "
        "embedding column (a bare COL means COL=COL)",
        typeConverter=_views)
    methods = Param(
        Params._dummy(), "methods",
        f"comma list of {','.join(METHODS)}, or auto: base,pairwise,cotrain with two views, "
        "base,pairwise,selftrain with one. The first of cotrain, selftrain, pairwise in the list gives "
        "NAME_class. On a model: a subset "
        "of the fitted methods to compute",
        typeConverter=_methods)
    ratioThreshold = Param(
        Params._dummy(), "ratioThreshold",
        "fit: a pair of classes keeps the dims whose cross ratio r(A,B) is at least this (METHOD.md step 5)",
        typeConverter=_finite_float)
    minDims = Param(
        Params._dummy(), "minDims", "fit: every pair keeps at least this many dims (highest ratios first)",
        typeConverter=_int_at_least(1))
    maxDims = Param(
        Params._dummy(), "maxDims", "fit: a pair keeps at most this many dims (0: no cap)",
        typeConverter=_int_at_least(0))
    minClassCount = Param(
        Params._dummy(), "minClassCount",
        "fit: a class with fewer confident items than this compares on every dim (no usable variance)",
        typeConverter=_int_at_least(1))
    minCosine = Param(
        Params._dummy(), "minCosine", "fit: confident subset, best-cosine floor in [-1, 1] (-1: none)",
        typeConverter=_float_in(-1.0, 1.0))
    minMargin = Param(
        Params._dummy(), "minMargin",
        "fit: confident subset, an absolute top-2 cosine margin (0: keep all) or a share of each view's "
        "least confident items to drop, like 30%; the share also places cotrain's confidence threshold "
        "(an absolute margin leaves cotrain its 30% default: its scores have no absolute scale)",
        typeConverter=_margin)
    seed = Param(
        Params._dummy(), "seed", "bracket shuffle seed; with item_id it fixes every item's bracket",
        typeConverter=_int_at_least(-(2**63)))
    candidates = Param(
        Params._dummy(), "candidates",
        "the pairwise bracket holds each item's top-K classes by base cosine (0: every class, the faithful "
        "method; auto: every class up to 64 classes, else the top 16)",
        typeConverter=_candidates)
    topK = Param(
        Params._dummy(), "topK",
        "NAME_top holds the primary method's K most probable classes with their calibrated probabilities "
        "(NAME_confidence is the first one's)",
        typeConverter=_int_at_least(1))
    backoffAt = Param(
        Params._dummy(), "backoffAt",
        "with a class tree (the classes' parent_id): NAME_backoff is the deepest node of NAME_path whose "
        "probability of being right (NAME_path_confidence) is at least this; null when not even the root reaches it",
        typeConverter=_float_in(0.0, 1.0))

    def __init__(self, *args: Any):
        super().__init__(*args)
        self._setDefault(classesFormat="parquet", methods="auto", ratioThreshold=1.2, minDims=8, maxDims=0, minClassCount=2, minCosine=-1.0,
                         minMargin="30%", seed=0, candidates="auto", topK=3, backoffAt=0.9)

    def getClassesPath(self) -> str:
        return self.getOrDefault(self.classesPath)

    def getClassesFormat(self) -> str:
        return self.getOrDefault(self.classesFormat)

    def getLabelsPath(self) -> str:
        return self.getOrDefault(self.labelsPath)

    def labels_path(self) -> str | None:
        """labelsPath when set, else None (no verified labels)."""
        return self.getLabelsPath() if self.isDefined(self.labelsPath) and self.getLabelsPath() else None

    def getViews(self) -> str:
        return self.getOrDefault(self.views)

    def getMethods(self) -> str:
        return self.getOrDefault(self.methods)

    def getRatioThreshold(self) -> float:
        return self.getOrDefault(self.ratioThreshold)

    def getMinDims(self) -> int:
        return self.getOrDefault(self.minDims)

    def getMaxDims(self) -> int:
        return self.getOrDefault(self.maxDims)

    def getMinClassCount(self) -> int:
        return self.getOrDefault(self.minClassCount)

    def getMinCosine(self) -> float:
        return self.getOrDefault(self.minCosine)

    def getMinMargin(self) -> str:
        return self.getOrDefault(self.minMargin)

    def getSeed(self) -> int:
        return self.getOrDefault(self.seed)

    def getCandidates(self) -> int | str:
        return self.getOrDefault(self.candidates)

    def getTopK(self) -> int:
        return self.getOrDefault(self.topK)

    def getBackoffAt(self) -> float:
        return self.getOrDefault(self.backoffAt)

    def check_settings(self) -> None:
        """Raise UsageError when Params that are each valid contradict each other (a cap below its
        floor would silently override it)."""
        from pairspark.errors import UsageError

        if self.getMaxDims() and self.getMinDims() > self.getMaxDims():
            raise UsageError(f"min_dims ({self.getMinDims()}) is above max_dims ({self.getMaxDims()}): a pair cannot "
                             "keep at least the one and at most the other; lower min_dims or raise max_dims (0: no cap)")

    # Derived forms the fit and classify code use (read from the Params, never stored apart).

    def classes_format(self) -> str | None:
        """The classes' format as read_source takes it (None: the default, and the only choice for table:NAME)."""
        return self.getClassesFormat() if self.isSet(self.classesFormat) else None

    def margin_rule(self) -> MarginRule:
        return MarginRule.parse(self.getMinMargin())

    def mask_settings(self) -> MaskSettings:
        return MaskSettings(self.getRatioThreshold(), self.getMinDims(), self.getMaxDims() or None, self.getMinClassCount())

    def method_list(self, n_views: int) -> tuple[str, ...]:
        chosen = self.getMethods()
        return default_methods(n_views) if chosen == "auto" else tuple(chosen.split(","))


# The Params a user sets as settings (CLI flags, TOML keys); classesPath and views are inputs.
SETTING_PARAMS = ("methods", "ratioThreshold", "minDims", "maxDims", "minClassCount", "minCosine", "minMargin",
                  "seed", "candidates", "topK", "backoffAt")
# The ones that act when a fitted model classifies (the rest are decided by fit).
CLASSIFY_PARAMS = ("methods", "seed", "candidates", "topK", "backoffAt")


def snake(name: str) -> str:
    """ratioThreshold -> ratio_threshold (TOML keys)."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def kebab(name: str) -> str:
    """ratioThreshold -> ratio-threshold (CLI flags)."""
    return snake(name).replace("_", "-")
