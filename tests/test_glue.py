"""The Spark glue's units on tiny inline DataFrames, compared with chispa: the repeated-id flag, the
quarantine's reasons and split, the sample's draw, the bracket key and the output column names.

The end-to-end tests (test_spark_pipeline, test_arrow_scan, test_ml_api) show that a whole run
gives the right answers; these pin each piece of DataFrame plumbing on its own, with every input
row and every expected row written out, so that a change to one unit names that unit when it
fails. One small model (3 classes, two 3-d views) is fitted once, from inline frames, for the
units that need fitted views.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pyarrow as pa
import pytest
from chispa import assert_column_equality, assert_df_equality
from chispa.schema_comparer import assert_schema_equality
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pairspark import PairwiseTournamentClassifier
from pairspark.core.columns import DUPLICATE, REASON, VERIFIED, answer_names
from pairspark.core.tournament import bracket_keys
from pairspark.core.validate import DUPLICATE_ITEM_ID
from pairspark.errors import InvalidRowsError, UsageError
from pairspark.spark.arrow_scan import FILE, ROW, ArrowScan
from pairspark.spark.items import (count_by_reason, first_invalid, first_set_aside, invalid_rows_error, marked_vectors,
                                   repeated_id_strings, repeated_ids, set_aside_rows, set_repeated_aside, stop_on_invalid_items,
                                   stop_on_set_aside, valid_rows, with_duplicate_flag)
from pairspark.spark.passes import DRAWN, FrameRows, drawn_mask, in_id_order
from pairspark.spark.transform import TOP_TYPE, answer_columns, answer_fields, bracket_key
from pairspark.views import View

pytestmark = pytest.mark.pyspark35  # also run on pyspark 3.5 by scripts/test

ITEMS = "item_id string, img array<float>, txt array<float>"
A, B = [0.9, 0.1, 0.0], [0.1, 0.9, 0.0]  # near class a, near class b


@pytest.fixture(scope="module")
def model(spark):
    """base and pairwise over two views, image=img and text=txt, classes a, b, c on the axes."""
    classes = spark.createDataFrame([("a", [1.0, 0.0, 0.0], [1.0, 0.1, 0.0]), ("b", [0.0, 1.0, 0.0], [0.1, 1.0, 0.0]),
                                     ("c", [0.0, 0.0, 1.0], [0.0, 0.1, 1.0])], "class_id string, img array<float>, txt array<float>")
    classes.createOrReplaceTempView("glue_classes")
    items = spark.createDataFrame([
        ("a-1", [0.9, 0.1, 0.0], [0.8, 0.2, 0.1]),
        ("a-2", [0.8, 0.0, 0.2], [0.9, 0.1, 0.0]),
        ("b-1", [0.1, 0.9, 0.0], [0.0, 0.9, 0.2]),
        ("b-2", [0.0, 0.8, 0.1], [0.2, 0.8, 0.0]),
        ("c-1", [0.1, 0.0, 0.9], [0.0, 0.1, 0.9]),
        ("c-2", [0.0, 0.2, 0.8], [0.1, 0.0, 0.8]),
    ], ITEMS)
    return PairwiseTournamentClassifier(classesPath="table:glue_classes", views="image=img,text=txt",
                                        methods="base,pairwise", minMargin="0").fit(items)


# ---- the repeated-id flag (spark/items.with_duplicate_flag) ----

def test_duplicate_flag_marks_every_row_of_a_repeated_id_and_never_a_null_id(spark):
    """Both rows of a repeated id are flagged (neither is kept as 'the first'); two null ids are not
    a repeat (a null id has its own reason, null_item_id); every input column is kept, in order,
    even one whose name holds a dot, and DUPLICATE comes last."""
    items = spark.createDataFrame([("a", 1), ("b", 2), ("b", 3), (None, 4), (None, 5), ("c", 6)], "item_id string, `note.x` int")
    expected = spark.createDataFrame(
        [("a", 1, False), ("b", 2, True), ("b", 3, True), (None, 4, False), (None, 5, False), ("c", 6, False)],
        f"item_id string, `note.x` int, {DUPLICATE} boolean")
    # in note.x's order: chispa's ignore_row_order sorts by the bare column names, and a dot in one reads as a path
    in_order = [lambda df: df.orderBy(F.col("`note.x`"))]
    assert_df_equality(with_duplicate_flag(items), expected, transforms=in_order, ignore_nullable=True)


def test_duplicate_flag_is_false_on_every_row_when_no_id_repeats(spark):
    items = spark.createDataFrame([(7, "x"), (-1, "y"), (None, "z")], "item_id bigint, note string")
    expected = spark.createDataFrame([(7, "x", False), (-1, "y", False), (None, "z", False)],
                                     f"item_id bigint, note string, {DUPLICATE} boolean")
    assert_df_equality(with_duplicate_flag(items), expected, ignore_row_order=True, ignore_nullable=True)


# ---- the quarantine: each bad row's reason, and the split on it ----

def _mixed_items(spark):
    """Two valid rows and one row for each reason of core/validate.py (image is the first view)."""
    return spark.createDataFrame([
        ("ok-a", A, [0.8, 0.2, 0.1]),
        ("ok-b", B, [0.0, 0.9, 0.2]),
        (None, A, A),
        ("no-img", None, A),
        ("short-txt", A, [0.1, 0.2]),
        ("nan-img", [math.nan, 0.1, 0.2], A),
        ("inf-txt", A, [math.inf, 0.0, 0.0]),
        ("hole-txt", A, [0.1, None, 0.2]),
        ("zero-both", [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
        ("twice", A, A),
        ("twice", B, B),
        ("twice-bad", None, A),
        ("twice-bad", A, A),
    ], ITEMS)


def test_transform_gives_each_bad_row_its_first_reason_and_a_valid_row_none(spark, model):
    """The reason column is where quarantine rows get their reason: the first problem of the row
    (the id, then the views in order, each view's checks in order), the repeat last, so of a
    repeated id's two rows one may carry its own reason and the other duplicate_item_id."""
    reasons = model.transform(_mixed_items(spark)).select("item_id", REASON)
    expected = spark.createDataFrame([
        ("ok-a", None),
        ("ok-b", None),
        (None, "null_item_id"),
        ("no-img", "image:null_vector"),
        ("short-txt", "text:wrong_length:2!=3"),
        ("nan-img", "image:non_finite"),
        ("inf-txt", "text:non_finite"),
        ("hole-txt", "text:null_element"),
        ("zero-both", "image:zero_vector"),
        ("twice", DUPLICATE_ITEM_ID),
        ("twice", DUPLICATE_ITEM_ID),
        ("twice-bad", "image:null_vector"),
        ("twice-bad", DUPLICATE_ITEM_ID),
    ], f"item_id string, {REASON} string")
    assert_df_equality(reasons, expected, ignore_row_order=True, ignore_nullable=True)


def test_the_split_on_reason_gives_valid_rows_every_answer_and_quarantined_rows_none(spark, model):
    """The quarantine is a `where` on reason (transform's docstring, classify's Spark reader): a
    row with no reason has every answer column, a row with one has none of them."""
    answers = answer_columns(model.view_models, model.run_methods)
    out = model.transform(_mixed_items(spark))
    present = [F.col(a).isNotNull().cast("int") for a in answers]
    checked = out.select(F.col(REASON).isNull().alias("valid"), F.col(REASON).isNotNull().alias("quarantined"),
                         (F.least(*present) == 1).alias("every_answer"), (F.greatest(*present) == 0).alias("no_answer"))
    assert_column_equality(checked, "valid", "every_answer")
    assert_column_equality(checked, "quarantined", "no_answer")
    valid = out.where(F.col(REASON).isNull()).select("item_id", "image_class", "text_class")
    expected = spark.createDataFrame([("ok-a", "a", "a"), ("ok-b", "b", "b")], "item_id string, image_class string, text_class string")
    assert_df_equality(valid, expected, ignore_row_order=True, ignore_nullable=True)


def test_the_arrow_reader_sets_a_repeated_id_aside_last_with_no_answers(spark):
    """ArrowScan.with_duplicates: the pyarrow reader checks all but the repeat in the workers, then
    a row whose id repeats (among the items, found by Spark) and that had no reason gets
    duplicate_item_id and null answers; a row that already had a reason keeps it and its (null)
    answers; a null id never repeats; the non-answer columns (the id, FILE, ROW) are kept."""
    items = spark.createDataFrame([("a",), ("d",), ("d",), ("e",), ("e",), (None,), (None,)], "item_id string")
    classified = spark.createDataFrame([
        ("a", "a", 0.5, None, 0, 0),
        ("d", "b", 0.25, None, 0, 1),
        ("d", "b", 0.5, None, 1, 0),
        ("e", None, None, "image:null_vector", 1, 1),
        ("e", "c", 0.75, None, 1, 2),
        (None, None, None, "null_item_id", 1, 3),
        (None, None, None, "null_item_id", 1, 4),
    ], f"_id string, image_class string, image_margin float, {REASON} string, {FILE} int, {ROW} bigint")
    scan = ArrowScan(files=(), splits=(), items=items)
    out = scan.with_duplicates(classified, "_id", ["image_class", "image_margin"])
    expected = spark.createDataFrame([
        ("a", "a", 0.5, None, 0, 0),
        ("d", None, None, DUPLICATE_ITEM_ID, 0, 1),
        ("d", None, None, DUPLICATE_ITEM_ID, 1, 0),
        ("e", None, None, "image:null_vector", 1, 1),
        ("e", None, None, DUPLICATE_ITEM_ID, 1, 2),
        (None, None, None, "null_item_id", 1, 3),
        (None, None, None, "null_item_id", 1, 4),
    ], f"_id string, image_class string, image_margin float, {REASON} string, {FILE} int, {ROW} bigint")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_on_invalid_error_names_the_first_bad_rows_by_item_id_nulls_first(spark):
    """items.first_invalid (--on-invalid error): the first three bad rows by item_id, a null id first,
    each with the reason the quarantine would give it."""
    items = _mixed_items(spark)
    bad = first_invalid(with_duplicate_flag(items), [View("image", "img"), View("text", "txt")], {"image": 3, "text": 3})
    assert bad == [(None, "null_item_id"), ("hole-txt", "text:null_element"), ("inf-txt", "text:non_finite")]


# ---- spark/items.py: the repeated ids, the quarantine split, the --on-invalid error ----

def test_repeated_ids_lists_each_repeated_id_once_and_never_a_null_one(spark):
    """One row per repeated id, in the items' type (the flag's join, the pyarrow reader's join and
    its shipped list all read this one aggregation); as strings for the pyarrow reader, at most `limit`."""
    items = spark.createDataFrame([(1,), (2,), (2,), (None,), (None,), (3,), (3,), (3,), (10,)], "item_id bigint")
    assert_df_equality(repeated_ids(items), spark.createDataFrame([(2,), (3,)], "item_id bigint"),
                       ignore_row_order=True, ignore_nullable=True)
    assert sorted(repeated_id_strings(items, 5)) == ["2", "3"]
    assert len(repeated_id_strings(items, 1)) == 1


def test_set_repeated_aside_keeps_every_column_in_its_place(spark):
    """set_repeated_aside over any answered frame (here REASON is not last, and a column that is not
    an answer follows it): only REASON and the answers change, on a repeated row with no reason."""
    items = spark.createDataFrame([("d",), ("d",), ("k",)], "item_id string")
    answered = spark.createDataFrame([("d", None, "a", "x"), ("d", "text:zero_vector", None, "y"), ("k", None, "b", "z")],
                                     f"_id string, {REASON} string, image_class string, note string")
    expected = spark.createDataFrame([("d", DUPLICATE_ITEM_ID, None, "x"), ("d", "text:zero_vector", None, "y"), ("k", None, "b", "z")],
                                     f"_id string, {REASON} string, image_class string, note string")
    assert_df_equality(set_repeated_aside(answered, items, "_id", ["image_class"]), expected,
                       ignore_row_order=True, ignore_nullable=True)


def test_the_quarantine_split_on_reason_and_its_counts(spark):
    """valid_rows: the rows with no reason (every column); set_aside_rows: the others, the given
    columns then REASON; a frame with no REASON column is all valid; count_by_reason per reason."""
    answered = spark.createDataFrame([("a", 1, "x", None), ("b", 2, None, "image:null_vector"), ("c", 3, None, "null_item_id"),
                                      ("d", 4, None, "image:null_vector")], f"item_id string, n int, image_class string, {REASON} string")
    assert_df_equality(valid_rows(answered), spark.createDataFrame([("a", 1, "x", None)], answered.schema),
                       ignore_nullable=True)
    expected = spark.createDataFrame([("b", 2, "image:null_vector"), ("c", 3, "null_item_id"), ("d", 4, "image:null_vector")],
                                     f"item_id string, n int, {REASON} string")
    assert_df_equality(set_aside_rows(answered, ["item_id", "n"]), expected, ignore_row_order=True, ignore_nullable=True)
    no_reason = answered.drop(REASON)
    assert_df_equality(valid_rows(no_reason), no_reason)
    assert count_by_reason(set_aside_rows(answered, ["item_id"])) == {"image:null_vector": 2, "null_item_id": 1}


def test_marked_vectors_gives_the_id_each_view_column_once_as_an_array_and_the_flag(spark):
    """A fit's rows: a pyspark.ml Vector column converted in the JVM, a column two views share read
    once, every other column dropped, DUPLICATE last."""
    from pyspark.ml.linalg import Vectors, VectorUDT

    schema = T.StructType([T.StructField("item_id", T.StringType()), T.StructField("v", VectorUDT()), T.StructField("note", T.StringType())])
    items = spark.createDataFrame([("a", Vectors.dense([1.0, 0.0]), "x"), ("a", Vectors.dense([0.0, 1.0]), "y"),
                                   ("b", Vectors.dense([0.5, 0.5]), "z")], schema)
    got = marked_vectors(items, [View("image", "v"), View("text", "v")])
    expected = spark.createDataFrame([("a", [1.0, 0.0], True), ("a", [0.0, 1.0], True), ("b", [0.5, 0.5], False)],
                                     f"item_id string, v array<double>, {DUPLICATE} boolean")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_the_on_invalid_error_message_names_each_row_and_the_way_out():
    error = invalid_rows_error("items.parquet", [(None, "null_item_id"), ("x-1", "image:zero_vector")])
    assert isinstance(error, InvalidRowsError)
    assert str(error) == ("invalid item rows in items.parquet, first: item_id=None (null_item_id), "
                          "item_id='x-1' (image:zero_vector); use --on-invalid quarantine to set them aside")


def test_on_invalid_error_stops_before_a_fit_and_after_classify_naming_the_same_first_rows(spark):
    """stop_on_invalid_items (fit: a pass of its own over the items) and stop_on_set_aside
    (classify: its quarantine) raise the one message; valid items and an empty quarantine pass."""
    views, dims = [View("image", "img"), View("text", "txt")], {"image": 3, "text": 3}
    first = "item_id=None (null_item_id), item_id='hole-txt' (text:null_element), item_id='inf-txt' (text:non_finite)"
    with pytest.raises(InvalidRowsError, match="^" + re.escape(f"invalid item rows in here, first: {first}; use --on-invalid quarantine")):
        stop_on_invalid_items(_mixed_items(spark), views, dims, "here")
    stop_on_invalid_items(_mixed_items(spark).where(F.col("item_id").startswith("ok-")), views, dims, "here")
    quarantine = spark.createDataFrame([("inf-txt", "text:non_finite"), ("hole-txt", "text:null_element"), (None, "null_item_id"),
                                        ("twice", DUPLICATE_ITEM_ID)], f"item_id string, {REASON} string")
    assert first_set_aside(quarantine) == [(None, "null_item_id"), ("hole-txt", "text:null_element"), ("inf-txt", "text:non_finite")]
    with pytest.raises(InvalidRowsError, match="^" + re.escape(f"invalid item rows in there, first: {first};")):
        stop_on_set_aside(quarantine, "there")
    stop_on_set_aside(quarantine.limit(0), "there")


# ---- the sample's draw (spark/passes.FrameRows.drawn, drawn_mask, in_id_order) ----

FRUIT = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "sloe", "yuzu", "quince", "medlar", "grape"]


def _drawn_frame(spark, table: pa.Table, schema: str):
    return spark.createDataFrame([tuple(row.values()) for row in table.to_pylist()], schema)


def test_the_draw_keeps_the_hash_drawn_rows_and_every_verified_row(spark):
    """At fraction 0.5 and seed 7 the hash draws plum, fig, kiwi, lime, date and yuzu (written out:
    the sample, hence cotrain and the calibration, would change with the draw); pear is verified
    and not drawn, so it comes too with DRAWN false; fig is verified and drawn."""
    verified = {"pear": 2, "fig": 0}
    frame = spark.createDataFrame([(i, verified.get(i, -1)) for i in FRUIT], f"item_id string, {VERIFIED} int")
    drawn = FrameRows(frame).drawn(0.5, 7)
    expected = spark.createDataFrame([
        ("pear", 2, False), ("plum", -1, True), ("fig", 0, True), ("kiwi", -1, True), ("lime", -1, True),
        ("date", -1, True), ("yuzu", -1, True),
    ], f"item_id string, {VERIFIED} int, {DRAWN} boolean")
    schema = f"item_id string, {VERIFIED} int, {DRAWN} boolean"
    assert_df_equality(_drawn_frame(spark, drawn, schema), expected, ignore_row_order=True)
    # the same draw outside the JVM (the pyarrow reader's): DRAWN is drawn_mask of the same ids
    mask = dict(zip(FRUIT, drawn_mask(pa.array(FRUIT), 0.5, 7).tolist()))
    assert {i for i, m in mask.items() if m} == {"plum", "fig", "kiwi", "lime", "date", "yuzu"}
    assert all(mask[row["item_id"]] == row[DRAWN] for row in drawn.to_pylist())


def test_a_draw_of_every_row_marks_them_all_drawn(spark):
    frame = spark.createDataFrame([(i, 1 if i == "kiwi" else -1) for i in FRUIT[:4] + ["kiwi"]], f"item_id string, {VERIFIED} int")
    drawn = FrameRows(frame).drawn(1.0, 7)
    expected = spark.createDataFrame([(i, 1 if i == "kiwi" else -1, True) for i in FRUIT[:4] + ["kiwi"]],
                                     f"item_id string, {VERIFIED} int, {DRAWN} boolean")
    assert_df_equality(_drawn_frame(spark, drawn, f"item_id string, {VERIFIED} int, {DRAWN} boolean"), expected,
                       ignore_row_order=True)


@pytest.mark.parametrize("fraction, seed", [(0.5, 0), (0.3, 2**31 - 1), (0.6, -4)])  # seed + 1 = 2**31: lit() turns long
def test_drawn_mask_draws_the_rows_of_the_spark_expression(spark, fraction, seed):
    """drawn_mask (numpy, the pyarrow reader's draw) against FrameRows.drawn's Spark expression,
    on string ids (with an empty one and multi-byte UTF-8) and on integer ids (cast to a string)."""
    strings = FRUIT + ["", "é", "日本語", "a string longer than thirty-two bytes, hashed in stripes"]
    integers = [0, 1, -1, 42, 2**31, -(2**40), 123456789, 7, 8, 9]
    for ids, dtype, arrow in ((strings, "string", pa.array(strings)), (integers, "bigint", pa.array(integers, pa.int64()))):
        frame = spark.createDataFrame([(i,) for i in ids], f"item_id {dtype}")
        jvm = _drawn_frame(spark, FrameRows(frame).drawn(fraction, seed), f"item_id {dtype}, {DRAWN} boolean")
        mask = drawn_mask(arrow, fraction, seed)
        expected = spark.createDataFrame([(i, True) for i, m in zip(ids, mask) if m], f"item_id {dtype}, {DRAWN} boolean")
        assert_df_equality(jvm, expected, ignore_row_order=True, ignore_nullable=True)
        assert 0 < int(mask.sum()) < len(ids)


def test_the_sample_is_in_item_id_order_as_a_string_whatever_the_partitioning(spark):
    """in_id_order over FrameRows.drawn: a collect returns rows in partition order, the
    calibration deals its folds by row position, so the sample is sorted by item_id as a string
    (10 before 2) and is the same table from one partition or three."""
    frame = spark.createDataFrame([(9, "i"), (10, "j"), (2, "b"), (1, "a"), (30, "c"), (3, "k")], "item_id bigint, note string")
    one = in_id_order(FrameRows(frame.coalesce(1)).drawn(1.0, 0))
    three = in_id_order(FrameRows(frame.repartition(3, "note")).drawn(1.0, 0))
    assert one.column("item_id").to_pylist() == [1, 10, 2, 3, 30, 9]
    assert one.column("note").to_pylist() == ["a", "j", "b", "k", "c", "i"]
    assert three.equals(one)


# ---- the bracket key (spark/transform.bracket_key, core/tournament.bracket_keys) ----

@pytest.mark.parametrize("seed", [0, -3, 2**31 - 1, 2**31, -(2**40)])  # lit(seed) is an int, then a long
def test_the_bracket_key_column_is_core_bracket_keys(spark, seed):
    """transform.bracket_key (the Spark reader's key, in the JVM) and tournament.bracket_keys (the
    pyarrow reader's, in numpy) give every item the same key, for string ids (empty, multi-byte,
    over 32 bytes) and integer ids (both hash the id as a string), so both readers play the same
    brackets."""
    strings = ["", "a", "abcd", "abcdefgh", "é", "日本語", "item-000042", "a string longer than thirty-two bytes, hashed in stripes"]
    integers = [0, -7, 12, 2**40, None]
    for ids, dtype, text in ((strings, "string", pa.array(strings)),
                             (integers, "bigint", pa.array(integers, pa.int64()).cast(pa.string()))):
        frame = spark.createDataFrame([(i,) for i in ids], f"item_id {dtype}")
        keys = bracket_keys(text, seed).view(np.int64).tolist()
        expected = spark.createDataFrame([(i, k) for i, k in zip(ids, keys) if i is not None], f"item_id {dtype}, key bigint")
        got = frame.where(F.col("item_id").isNotNull()).select("item_id", bracket_key(seed).alias("key"))
        assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_the_bracket_key_of_an_id_is_fixed(spark):
    """The key itself, written out: another key would put items in other brackets (other answers)."""
    frame = spark.createDataFrame([("item-000042",), ("é",)], "item_id string")
    expected = spark.createDataFrame([("item-000042", -7385460904090903026), ("é", -2369089880887944655)], "item_id string, key bigint")
    assert_df_equality(frame.select("item_id", bracket_key(0).alias("key")), expected, ignore_row_order=True, ignore_nullable=True)


# ---- the output columns' names (spark/transform.answer_fields) ----

def _answers(view: str, methods: list[str]) -> list[T.StructField]:
    return ([T.StructField(f"{view}_{m}", T.StringType()) for m in methods]
            + [T.StructField(f"{view}_class", T.StringType()), T.StructField(f"{view}_base_cosine", T.FloatType()),
               T.StructField(f"{view}_margin", T.FloatType()), T.StructField(f"{view}_confidence", T.FloatType()),
               T.StructField(f"{view}_top", TOP_TYPE)])


def test_answer_fields_name_each_views_columns_per_method_then_reason(model):
    """Per view in order: NAME_<method> per method, NAME_class, NAME_base_cosine, NAME_margin,
    NAME_confidence, NAME_top (list of class_id, score); `reason` once, last."""
    got = T.StructType(answer_fields(model.view_models, ("base", "pairwise")))
    expected = T.StructType(_answers("image", ["base", "pairwise"]) + _answers("text", ["base", "pairwise"])
                            + [T.StructField(REASON, T.StringType())])
    assert_schema_equality(got, expected)
    assert [f.name for f in got.fields] == answer_names(["image", "text"], ("base", "pairwise"))
    assert [f.name for f in answer_fields(model.view_models[1:], ("base",))] == [
        "text_base", "text_class", "text_base_cosine", "text_margin", "text_confidence", "text_top", "reason"]
    top = T.ArrayType(T.StructType([T.StructField("class_id", T.StringType()), T.StructField("score", T.FloatType())]))
    assert_schema_equality(T.StructType([T.StructField("t", TOP_TYPE)]), T.StructType([T.StructField("t", top)]))


def test_transform_keeps_every_input_column_and_adds_the_answer_fields_in_order(spark, model):
    items = spark.createDataFrame([("ok-a", A, [0.8, 0.2, 0.1], "x y")], ITEMS + ", `note x` string")
    out = model.transform(items)
    expected = T.StructType(items.schema.fields + answer_fields(model.view_models, model.run_methods))
    assert_schema_equality(out.schema, expected, ignore_nullable=True)
    assert model.run_methods == ("base", "pairwise")


def test_transform_refuses_items_that_already_have_an_answer_column(spark, model):
    items = spark.createDataFrame([("ok-a", A, A, 0.5)], ITEMS + ", text_margin double")
    with pytest.raises(UsageError, match="already have the output column.*text_margin"):
        model.transform(items)
