"""Every column name pairspark reads or writes, in one place (no Spark, no pyarrow: the lowest layer).

Output columns of the model's transform and of classify's predictions, per view NAME and method M:

    NAME_M            the answer of method M (one column per method)
    NAME_class        the primary method's answer
    NAME_base_cosine  the base answer's cosine
    NAME_margin       the primary method's margin
    NAME_confidence   the calibrated probability that NAME_class is right
    NAME_top          the primary's top-k classes: list of (class_id, score), highest first

then `reason` (why the row is quarantined, null for a valid row). The inputs' `item_id` and
`class_id`, the predictions' `verified_label`, and the internal columns that never leave a run
(the repeated-id flag, the verified class index) are here too.
"""

from __future__ import annotations

from collections.abc import Iterable

# ---- the shared data format (inputs) ----
ITEM_ID = "item_id"
CLASS_ID = "class_id"

# ---- outputs ----
REASON = "reason"  # why an item row is quarantined (null for a valid row): see core/validate.py
VERIFIED_LABEL = "verified_label"  # the predictions' column: the verified class_id, null for none
TOP_CLASS, TOP_SCORE = "class_id", "score"  # the fields of each NAME_top entry

# ---- internal columns (never written) ----
DUPLICATE = "_duplicate"  # true where the row's item_id occurs more than once in the input (spark/items.py)
VERIFIED = "_pairspark_verified"  # class index of a row's verified label, -1 for none (fit's passes)


def method_col(view: str, method: str) -> str:
    """NAME_M: the answer of `method` in view `view` (NAME_base: the zero-shot answer)."""
    return f"{view}_{method}"


def class_col(view: str) -> str:
    """NAME_class: the primary method's answer."""
    return f"{view}_class"


def base_cosine_col(view: str) -> str:
    return f"{view}_base_cosine"


def margin_col(view: str) -> str:
    return f"{view}_margin"


def confidence_col(view: str) -> str:
    """NAME_confidence: the calibrated probability that NAME_class is right."""
    return f"{view}_confidence"


def top_col(view: str) -> str:
    return f"{view}_top"


def view_answer_names(view: str, methods: Iterable[str]) -> list[str]:
    """One view's output columns, in order: NAME_M per method, NAME_class, NAME_base_cosine,
    NAME_margin, NAME_confidence, NAME_top."""
    return [method_col(view, m) for m in methods] + [class_col(view), base_cosine_col(view), margin_col(view),
                                                     confidence_col(view), top_col(view)]


def answer_names(view_names: Iterable[str], methods: Iterable[str]) -> list[str]:
    """The columns transform adds, in order: view_answer_names per view, then REASON."""
    methods = tuple(methods)
    return [name for view in view_names for name in view_answer_names(view, methods)] + [REASON]
