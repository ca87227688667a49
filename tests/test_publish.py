"""Publishing and the output lock (pairspark/spark/publish.py), and what `pipeline.run` refuses."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from pairspark.errors import UsageError
from pairspark.spark.fs import FileSystem
from pairspark.spark.publish import (
    OutputLock,
    atomic_output,
    new_token,
    output_lock,
    recover,
    repoint,
)


@pytest.fixture
def fs(spark):
    return FileSystem(spark)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _plant_lock(path, **record):
    defaults = {"host": socket.gethostname(), "pid": os.getpid(), "user": "someone", "since": "2026-01-01 00:00:00 UTC",
                "token": "planted"}
    path.write_text(json.dumps({**defaults, **record}))


# --- publishing --------------------------------------------------------------------------------

def test_tokens_sort_by_time():
    tokens = []
    for _ in range(5):
        tokens.append(new_token())
        time.sleep(0.002)
    assert sorted(tokens) == tokens and len(set(tokens)) == 5


def test_recover_restores_the_newest_of_several_old_copies(fs, tmp_path):
    # a copy named before time-ordered tokens (random hex, sorts last by name) but old by its mtime
    legacy = tmp_path / "out.old-ffffffffffff"
    legacy.mkdir()
    (legacy / "which").write_text("legacy")
    past = time.time() - 3600
    os.utime(legacy, (past, past))
    for which in ("first", "second", "third"):  # retired in this order
        copy = tmp_path / f"out.old-{new_token()}"
        copy.mkdir()
        (copy / "which").write_text(which)
        time.sleep(0.002)
    recover(fs, str(tmp_path / "out"))
    assert (tmp_path / "out" / "which").read_text() == "third"
    # with a final in place nothing moves
    recover(fs, str(tmp_path / "out"))
    assert (tmp_path / "out" / "which").read_text() == "third"


def test_a_failed_cleanup_never_hides_why_the_block_failed(fs, tmp_path, monkeypatch):
    """When the driver JVM dies mid-write, deleting the staging folder fails too: the error the
    run reports must still be the block's (CI saw a refused connection in its place)."""
    final = str(tmp_path / "out")
    with atomic_output(fs, final) as staging:
        (tmp_path / "good").mkdir()
    with pytest.raises(RuntimeError, match="the block's own error"):
        with atomic_output(fs, final) as staging:
            monkeypatch.setattr(fs, "delete", lambda path: (_ for _ in ()).throw(ConnectionRefusedError(111, "refused")))
            os.makedirs(staging.replace("file:", ""), exist_ok=True)
            raise RuntimeError("the block's own error")
    monkeypatch.undo()
    assert os.path.isdir(final) and any(n.startswith("out.staging-") for n in os.listdir(tmp_path))
    with atomic_output(fs, final) as staging:  # the next run clears the leftover
        os.makedirs(staging, exist_ok=True)
    assert not any(n.startswith("out.staging-") for n in os.listdir(tmp_path))


def test_a_publish_killed_between_the_renames_is_undone_by_the_next_one(spark, tmp_path):
    final = str(tmp_path / "out")
    with atomic_output(spark, final) as staging:
        spark.range(3).write.parquet(staging)
    (tmp_path / "out").rename(tmp_path / f"out.old-{new_token()}")  # first rename done, then killed
    (tmp_path / f"out.staging-{new_token()}").mkdir()  # the staging copy never renamed
    with atomic_output(spark, final) as staging:
        assert spark.read.parquet(final).count() == 3  # restored before anything else happens
        spark.range(5).write.parquet(staging)
    assert spark.read.parquet(final).count() == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_repoint_names_the_final_paths_in_text_json_and_html():
    staging, final = "/r/a&b.staging-20260101T000000000000000Z-abcdef", "/r/a&b"
    assert repoint(f"file:{staging}/model", staging, final) == "file:/r/a&b/model"
    assert repoint("x /r/a&amp;b.staging-20260101T000000000000000Z-abcdef/p", staging, final) == "x /r/a&amp;b/p"
    assert repoint({"predictions": f"file:{staging}/predictions", "n": 1}, staging, final) == {
        "predictions": "file:/r/a&b/predictions", "n": 1}


# --- the lock ----------------------------------------------------------------------------------

def test_a_second_holder_is_refused_with_who_holds_the_lock_and_since_when(fs, tmp_path):
    out = str(tmp_path / "out")
    with output_lock(fs, out) as first:
        assert (tmp_path / "out.lock").exists() and not (tmp_path / "out").exists()
        with pytest.raises(UsageError) as refused:
            with output_lock(fs, out):
                pass
        message = str(refused.value)
        record = json.loads((tmp_path / "out.lock").read_text())
        assert "\n" not in message
        for fact in (f"pid {os.getpid()}", f"host {socket.gethostname()}", f"user {record['user']}",
                     f"since {record['since']}", "UTC", str(tmp_path / "out.lock")):
            assert fact in message, (fact, message)
        first.check()  # the refused attempt left the holder's lock alone
    assert not (tmp_path / "out.lock").exists()


def test_a_lock_whose_process_is_dead_is_taken_over_at_once(fs, tmp_path, caplog):
    pid = _dead_pid()
    _plant_lock(tmp_path / "out.lock", pid=pid)  # fresh heartbeat, but its process is gone
    with caplog.at_level(logging.WARNING, logger="pairspark"):
        with output_lock(fs, str(tmp_path / "out")) as lock:
            assert json.loads((tmp_path / "out.lock").read_text())["token"] == lock.token
    assert any("taking over the stale lock" in r.getMessage() and f"pid {pid}" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # released, nothing moved aside left behind


def test_a_lock_of_another_host_is_stale_only_after_the_heartbeat_timeout(fs, tmp_path):
    lock_file = tmp_path / "out.lock"
    _plant_lock(lock_file, host="elsewhere.example", pid=1)
    with pytest.raises(UsageError, match="host elsewhere.example, pid 1"):
        with output_lock(fs, str(tmp_path / "out")):
            pass
    past = time.time() - 11 * 60  # no heartbeat for 11 minutes: the default timeout is 10
    os.utime(lock_file, (past, past))
    with output_lock(fs, str(tmp_path / "out")) as lock:
        assert json.loads(lock_file.read_text())["host"] == socket.gethostname()
        assert lock.timeout_seconds == 600
    assert not lock_file.exists()


def test_the_lock_is_released_after_an_exception(fs, tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with output_lock(fs, str(tmp_path / "out")):
            raise RuntimeError("boom")
    assert not (tmp_path / "out.lock").exists()
    with output_lock(fs, str(tmp_path / "out")):  # and can be taken again
        pass


def test_the_holder_refreshes_its_heartbeat_and_notices_a_lost_lock(fs, tmp_path):
    lock_file = tmp_path / "out.lock"
    with output_lock(fs, str(tmp_path / "out"), heartbeat_seconds=0.1) as lock:
        past = time.time() - 300
        os.utime(lock_file, (past, past))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and lock_file.stat().st_mtime <= past:
            time.sleep(0.05)
        assert lock_file.stat().st_mtime > past  # touched again by the heartbeat (no speed asserted)
        # another run took it over (e.g. this one hung for longer than the timeout)
        lock_file.unlink()
        _plant_lock(lock_file, host="elsewhere.example", pid=7)
        with pytest.raises(UsageError, match="lost the lock .*host elsewhere.example, pid 7"):
            lock.check()
    assert json.loads(lock_file.read_text())["host"] == "elsewhere.example"  # not ours: left alone


def test_two_takers_of_one_stale_lock_do_not_both_win(fs, tmp_path):
    lock_file = tmp_path / "out.lock"
    _plant_lock(lock_file, pid=_dead_pid(), token="stale")
    stale = json.loads(lock_file.read_text())
    winner = OutputLock(fs, str(tmp_path / "out")).acquire()
    try:
        # a second taker that judged the same stale record a moment earlier moves the winner's lock
        # aside, sees it is not the stale one and puts it back
        loser = OutputLock(fs, str(tmp_path / "out"))
        loser._move_aside({**stale, "_modified_ms": 0})
        assert json.loads(lock_file.read_text())["token"] == winner.token
        winner.check()
        with pytest.raises(UsageError, match=f"pid {os.getpid()}"):
            loser.acquire()
    finally:
        winner.release()
    assert not lock_file.exists()


# --- what `pairspark run` refuses before any work -----------------------------------------------

@pytest.fixture
def tiny_catalog(tmp_path):
    from tests.synthetic import make_catalog, write_catalog

    items, classes, _ = make_catalog(60, 8, 3, seed=1)
    return write_catalog(tmp_path / "data", items, classes)


@pytest.mark.parametrize("where", ["items", "inside items", "classes", "inside classes", "items inside out"])
def test_run_refuses_an_out_that_is_or_holds_an_input(spark, tmp_path, tiny_catalog, where):
    from pairspark import pipeline
    from pairspark.config import View, load_settings

    items_path, classes_path = tiny_catalog
    views = [View("image", "image_embedding"), View("text", "text_embedding")]
    out = {"items": items_path, "inside items": f"{items_path}/run", "classes": classes_path + "/",
           "inside classes": f"{classes_path}/a/b", "items inside out": str(tmp_path)}[where]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(UsageError, match="--out|inside --out"):
        pipeline.run(spark, items_path, classes_path, views, out, load_settings())
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written, no lock


def test_run_refuses_to_replace_a_folder_that_is_not_a_run(spark, tmp_path, tiny_catalog):
    from pairspark import pipeline
    from pairspark.config import View, load_settings

    items_path, classes_path = tiny_catalog
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("years of work")
    with pytest.raises(UsageError, match=r"holds more than a pairspark run \(thesis.tex\)"):
        pipeline.run(spark, items_path, classes_path, [View("image", "image_embedding")], str(tmp_path / "home"),
                     load_settings())
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["thesis.tex"]
    assert not (tmp_path / "home.lock").exists()
