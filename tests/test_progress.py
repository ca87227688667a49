"""pairspark.progress: our own line for long Spark stages; Spark's bars off unless verbose."""

from __future__ import annotations

import logging
import threading
import time

from pairspark.progress import _duration, progress
from pairspark.spark.session import CONSOLE_PROGRESS, session_conf

FAST = {"poll_seconds": 0.1, "min_stage_seconds": 1.0, "log_every_seconds": 1.0}


def _sleepy(batches):
    for batch in batches:
        time.sleep(1.0)
        yield batch


def _lines(caplog, name):
    messages = [r.getMessage() for r in caplog.records if r.name == "pairspark"]
    return [m for m in messages if m.startswith(f"{name}:")]


def test_slow_stage_logs_tasks_items_and_eta(spark, caplog):
    caplog.set_level(logging.INFO, logger="pairspark")
    slow = spark.range(0, 8000, numPartitions=8).mapInPandas(_sleepy, "id long")
    with progress(spark, "classify", total_items=8000, **FAST):
        assert len(slow.collect()) == 8000
    lines = _lines(caplog, "classify")
    assert lines, "no progress line for a ~4 s stage"
    assert all("/8 tasks" in line for line in lines)
    eta = [line for line in lines if "items/s" in line and "ETA" in line]
    assert eta and all("/8,000 items" in line for line in eta), lines


def test_fast_job_stays_silent(spark, caplog):
    caplog.set_level(logging.INFO, logger="pairspark")
    with progress(spark, "fit", total_items=10, poll_seconds=0.1, min_stage_seconds=3.0):
        assert spark.range(10).count() == 10
    assert _lines(caplog, "fit") == []


def test_without_total_items_reports_tasks_only(spark, caplog):
    caplog.set_level(logging.INFO, logger="pairspark")
    slow = spark.range(0, 80, numPartitions=6).mapInPandas(_sleepy, "id long")
    with progress(spark, "audit", **FAST):
        slow.collect()
    lines = _lines(caplog, "audit")
    assert lines and all("/6 tasks" in line and "items" not in line for line in lines)


class _ConnectLike:
    @property
    def sparkContext(self):
        raise RuntimeError("[JVM_ATTRIBUTE_NOT_SUPPORTED] not supported in Spark Connect")


def test_no_spark_context_is_a_no_op(caplog):
    caplog.set_level(logging.DEBUG, logger="pairspark")
    for session in (_ConnectLike(), None):
        with progress(session, "embed", total_items=5, **FAST):
            time.sleep(0.3)
    assert _lines(caplog, "embed") == []


def test_errors_in_the_block_pass_through_and_stop_the_thread(spark):
    try:
        with progress(spark, "diff", **FAST):
            raise KeyError("mine")
    except KeyError as exc:
        assert exc.args == ("mine",)
    else:
        raise AssertionError("the block's error was swallowed")
    assert not [t for t in threading.enumerate() if t.name == "progress-diff"]


def test_stage_still_logs_done_with_or_without_a_session(caplog):
    from pairspark.pipeline.stage import stage

    caplog.set_level(logging.INFO, logger="pairspark")
    with stage("fit") as facts:
        facts["rows"] = 3
    with stage("classify", _ConnectLike(), total_items=3) as facts:
        facts["rows"] = 4
    done = [r.getMessage() for r in caplog.records if " done in " in r.getMessage()]
    assert done[0].startswith("fit done in ") and done[0].endswith("rows=3")
    assert done[1].startswith("classify done in ") and done[1].endswith("rows=4")


def test_duration():
    assert [_duration(s) for s in (4.4, 59.6, 61, 3600 + 125)] == ["4s", "1m00s", "1m01s", "1h02m"]


def test_console_progress_off_unless_verbose_or_user_set():
    assert session_conf(None, verbose=False) == {CONSOLE_PROGRESS: "false"}
    assert session_conf({"a": "1"}, verbose=True) == {"a": "1"}
    assert session_conf({CONSOLE_PROGRESS: "true"}, verbose=False) == {CONSOLE_PROGRESS: "true"}
    # spark-submit --conf spark.ui.showConsoleProgress=...: the user's setting wins.
    assert session_conf(None, verbose=False, user_set=lambda key: key == CONSOLE_PROGRESS) == {}
    assert session_conf(None, False, user_set=lambda key: False) == {CONSOLE_PROGRESS: "false"}
