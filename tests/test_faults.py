"""Reruns into one OUT killed with SIGKILL at several points leave the previous run's outputs intact
and readable; a nightly rerun into a fixed OUT reports what changed; two runs on one OUT exclude
each other."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.synthetic import make_catalog, write_catalog

PAIRSPARK = str(Path(sys.executable).parent / "pairspark")
OUTPUTS = ("model", "quarantine", "predictions", "review", "report")


def _start_run(items, classes, out, *extra):
    cmd = [PAIRSPARK, "run", "--items", items, "--classes", classes, "--views", "image=image_embedding,text=text_embedding",
           "--out", str(out), "--label-col", "label", "--master", "local[2]", "--partitions", "4", *extra]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    # a session of its own: the JVM and the Python workers share its process group, killed as one
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc, timeout=600) -> str:
    _, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, stderr[-3000:]
    return stderr


def hashable(frame: pd.DataFrame) -> pd.DataFrame:
    """Array columns (NAME_top) as their text, so pandas can hash the rows."""
    return frame.assign(**{c: frame[c].map(lambda v: repr(None if v is None else [dict(t) for t in v]))
                           for c in frame.columns if c.endswith("_top")})


def _snapshot(out: Path) -> dict:
    """What a reader sees: every output readable, with its content digest (free of timestamps);
    `changes`: the report's changed items per view (None without a previous run)."""
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    metrics.pop("created_at")
    changes = metrics.pop("changes", None)
    predictions = pd.read_parquet(out / "predictions").sort_values("item_id").reset_index(drop=True)
    stats = pd.read_parquet(out / "model" / "stats.parquet").sort_values(["view", "class_id"])
    quarantine = pd.read_parquet(out / "quarantine")
    return {
        "metrics": metrics,
        "changes": changes and changes["changed"],
        "predictions": hashlib.sha256(pd.util.hash_pandas_object(hashable(predictions)).values.tobytes()).hexdigest(),
        "stats_counts": stats["count"].tolist(),
        "quarantined": len(quarantine),
        "success_markers": all((out / name / "_SUCCESS").exists() for name in (*OUTPUTS, ".")),
    }


def _matches(root: Path, pattern: str) -> set[Path]:
    """The paths matching `pattern` now. A killed run's staging folder may be removed by the run
    that takes over its lock while the glob walks it: a folder gone mid-walk is no match."""
    try:
        return set(root.glob(pattern))
    except FileNotFoundError:
        return set()


def _wait_for(root: Path, pattern: str, proc, old: set[Path], timeout=300.0) -> bool:
    """Until a path matching `pattern` (a glob under root) exists that is not in `old` (a killed
    run's leftovers), or the process ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if _matches(root, pattern) - old:
            return True
        time.sleep(0.02)
    return False


def _kill_at(items, classes, out: Path, pattern: str, delay: float, *extra) -> tuple:
    old = _matches(out.parent, pattern)
    proc = _start_run(items, classes, out, *extra)
    hit = _wait_for(out.parent, pattern, proc, old)
    time.sleep(delay)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    return pattern, delay, hit, proc.returncode


def _no_leftovers(out: Path, *also: str) -> None:
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.name)) == [out.name]  # no lock, staging, old
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted((*OUTPUTS, "_SUCCESS", *also))


@pytest.mark.slow
def test_sigkill_during_a_rerun_leaves_the_previous_output_and_the_next_run_recovers(tmp_path):
    items, classes, _ = make_catalog(20_000, 48, 12, seed=21)
    items_path, classes_path = write_catalog(tmp_path / "data", items, classes)
    out = tmp_path / "out"
    _finish(_start_run(items_path, classes_path, out))
    before = _snapshot(out)
    assert before["success_markers"] and before["changes"] is None

    # kill points: as the run's staging folder and each output's staging directory in it appear,
    # and part-way into writing them
    observed = []
    for pattern, delay in (("out.staging-*", 0.0), ("out.staging-*/model.staging-*", 1.0),
                           ("out.staging-*/quarantine.staging-*", 0.2), ("out.staging-*/predictions.staging-*", 0.0),
                           ("out.staging-*/predictions.staging-*", 0.8), ("out.staging-*/report.staging-*", 0.0)):
        observed.append(_kill_at(items_path, classes_path, out, pattern, delay))
        # the previous output is intact and readable, whatever the moment of the kill
        assert _snapshot(out) == before, observed
    assert sum(1 for *_, rc in observed if rc == -signal.SIGKILL) >= 4, observed

    # the next run succeeds without any manual clean-up (taking over the killed run's lock) and
    # leaves no leftovers; same inputs: the same outputs, and no item changed since the last run
    stderr = _finish(_start_run(items_path, classes_path, out))
    assert "taking over the stale lock" in stderr
    after = _snapshot(out)
    assert after.pop("changes") == {"image": 0, "text": 0}
    before.pop("changes")
    assert after == before
    _no_leftovers(out, "changes")


def _tomorrow(items: dict, truth: np.ndarray, moved: int, gone: int) -> dict:
    """The next night's catalog: `moved` items re-embedded like an item of another class (their class
    changes), the last `gone` items removed."""
    items = {k: (v.copy() if isinstance(v, np.ndarray) else list(v)) for k, v in items.items()}
    for i in range(moved):
        donor = np.flatnonzero(truth != truth[i])[i]
        for column in ("image_embedding", "text_embedding"):
            items[column][i] = items[column][donor]
    return {k: v[:-gone] for k, v in items.items()}


@pytest.mark.slow
def test_a_nightly_rerun_into_a_fixed_out_reports_the_changes_and_survives_kills(tmp_path):
    items, classes, truth = make_catalog(6_000, 32, 8, seed=5)
    night1 = write_catalog(tmp_path / "night1", items, classes)
    night2 = write_catalog(tmp_path / "night2", _tomorrow(items, truth, moved=200, gone=100), classes)
    out = tmp_path / "nightly"
    cron = ("--previous", str(out / "predictions"), "--methods", "base,pairwise")  # the same line every night
    # night 1: nothing to compare with yet
    _finish(_start_run(*night1, out, *cron))
    before = _snapshot(out)
    assert before["success_markers"] and before["changes"] is None and not (out / "changes").exists()
    old = pd.read_parquet(out / "predictions").set_index("item_id")

    # night 2, killed at several points while OUT/predictions is still the diff's input
    observed = []
    for pattern, delay in (("nightly.staging-*", 0.0), ("nightly.staging-*/predictions.staging-*", 0.5)):
        observed.append(_kill_at(*night2, out, pattern, delay, *cron))
        assert _snapshot(out) == before, observed
    assert all(hit and rc == -signal.SIGKILL for _, _, hit, rc in observed), observed

    _finish(_start_run(*night2, out, *cron))
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    summary = json.loads((out / "changes" / "summary.json").read_text())
    changes = pd.read_parquet(out / "changes" / "changes")
    new = pd.read_parquet(out / "predictions").set_index("item_id")
    both = old.index.intersection(new.index)
    for view in ("image", "text"):
        differs = int((old.loc[both, f"{view}_class"] != new.loc[both, f"{view}_class"]).sum())
        assert metrics["changes"]["changed"][view] == summary["changed"][view] == differs == int((changes["view"] == view).sum())
        assert differs >= 150  # most of the 200 re-embedded items
    assert (metrics["changes"]["compared"], metrics["changes"]["added"], metrics["changes"]["removed"]) == (5_900, 0, 100)
    assert "Changes since the previous run" in (out / "report" / "report.html").read_text()
    # recorded paths name the published outputs, not the staging folder they were written in
    info = json.loads((out / "predictions" / "_pairspark.json").read_text())
    assert info["model"] == f"file:{out}/model" and info["quarantine"] == f"file:{out}/quarantine"
    assert metrics["predictions"] == summary["new"] == f"file:{out}/predictions"
    for path in out.rglob("*"):
        if path.suffix in (".json", ".html"):
            assert "staging-" not in path.read_text(), path
    _no_leftovers(out, "changes")


@pytest.mark.slow
def test_a_second_run_on_the_same_out_exits_2_naming_the_holder(tmp_path):
    items, classes, _ = make_catalog(2_000, 16, 4, seed=3)
    items_path, classes_path = write_catalog(tmp_path / "data", items, classes)
    out = tmp_path / "out"
    first = _start_run(items_path, classes_path, out)
    try:
        assert _wait_for(tmp_path, "out.staging-*", first, set()), first.communicate()[1][-3000:]
        os.killpg(first.pid, signal.SIGSTOP)  # hold it there, lock taken, whatever this machine's speed
        second = _start_run(items_path, classes_path, out)
        _, stderr = second.communicate(timeout=300)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert second.returncode == 2, stderr[-3000:]
    error = [line for line in stderr.splitlines() if line.startswith("pairspark run: error:")]
    assert len(error) == 1, stderr[-3000:]
    for fact in ("is locked by another pairspark run", f"host {socket.gethostname()}", f"pid {first.pid}", "since", "UTC"):
        assert fact in error[0], (fact, error[0])
    _finish(first)  # the holder goes on undisturbed and releases the lock
    _no_leftovers(out)
