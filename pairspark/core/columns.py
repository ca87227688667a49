"""Every column name pairspark reads or writes, in one place (no Spark, no pyarrow: the lowest layer).

Output columns of the model's transform and of classify's predictions, per view NAME and method M:

    NAME_M            the answer of method M (one column per method)
    NAME_class        the primary method's answer
    NAME_base_cosine  the base answer's cosine
    NAME_margin       the primary method's margin
    NAME_confidence   the calibrated probability that NAME_class is right
    NAME_top          the primary's top-k classes: list of (class_id, score), highest first

with a class tree (the classes' parent_id; core/tree.py), from the primary's probabilities:

    NAME_path             the answer's path: node ids, root first, NAME_class last
    NAME_path_confidence  per node of the path, the probability that the path is right down to it
    NAME_backoff          the deepest node of the path at least backoffAt likely (null: none)

then `reason` (why the row is quarantined, null for a valid row). The inputs' `item_id` and
`class_id`, the predictions' `verified_label`, and the internal columns that never leave a run
(the repeated-id flag, the verified class index) are here too.
"""

from __future__ import annotations

from collections.abc import Iterable

# ---- the shared data format (inputs) ----
ITEM_ID = "item_id"
CLASS_ID = "class_id"
PARENT_ID = "parent_id"  # the classes table's optional tree: a node's parent class_id, null at a root

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


def path_col(view: str) -> str:
    return f"{view}_path"


def path_confidence_col(view: str) -> str:
    return f"{view}_path_confidence"


def backoff_col(view: str) -> str:
    return f"{view}_backoff"


def view_answer_names(view: str, methods: Iterable[str], tree: bool = False) -> list[str]:
    """One view's output columns, in order: NAME_M per method, NAME_class, NAME_base_cosine,
    NAME_margin, NAME_confidence, NAME_top, and with a class tree NAME_path,
    NAME_path_confidence, NAME_backoff."""
    return ([method_col(view, m) for m in methods] + [class_col(view), base_cosine_col(view), margin_col(view),
                                                      confidence_col(view), top_col(view)]
            + ([path_col(view), path_confidence_col(view), backoff_col(view)] if tree else []))


def answer_names(view_names: Iterable[str], methods: Iterable[str], tree: bool = False) -> list[str]:
    """The columns transform adds, in order: view_answer_names per view, then REASON."""
    methods = tuple(methods)
    return [name for view in view_names for name in view_answer_names(view, methods, tree)] + [REASON]
