"""A rerun killed with SIGKILL at several points leaves the previous outputs intact and readable."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.synthetic import make_catalog, write_catalog

PAIRSPARK = str(Path(sys.executable).parent / "pairspark")
OUTPUTS = ("model", "quarantine", "predictions", "report")


def _start_run(items, classes, out):
    cmd = [PAIRSPARK, "run", "--items", items, "--classes", classes, "--views", "image=image_embedding,text=text_embedding",
           "--out", str(out), "--label-col", "label", "--master", "local[2]", "--partitions", "4"]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    # a session of its own: the JVM and the Python workers share its process group, killed as one
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _snapshot(out: Path) -> dict:
    """What a reader sees: every output readable, with its content digest (free of timestamps)."""
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    metrics.pop("created_at")
    predictions = pd.read_parquet(out / "predictions").sort_values("item_id").reset_index(drop=True)
    stats = pd.read_parquet(out / "model" / "stats.parquet").sort_values(["view", "class_id"])
    quarantine = pd.read_parquet(out / "quarantine")
    return {
        "metrics": metrics,
        "predictions": hashlib.sha256(pd.util.hash_pandas_object(predictions).values.tobytes()).hexdigest(),
        "stats_counts": stats["count"].tolist(),
        "quarantined": len(quarantine),
        "success_markers": all((out / name / "_SUCCESS").exists() for name in OUTPUTS),
    }


def _wait_for(out: Path, prefix: str, proc, timeout=300.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.startswith(prefix) for p in out.iterdir()):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_sigkill_during_a_rerun_leaves_the_previous_output_and_the_next_run_recovers(tmp_path):
    items, classes, _ = make_catalog(20_000, 48, 12, seed=21)
    items_path, classes_path = write_catalog(tmp_path / "data", items, classes)
    out = tmp_path / "out"
    first = _start_run(items_path, classes_path, out)
    assert first.wait(timeout=600) == 0, first.stderr.read()[-3000:]
    before = _snapshot(out)
    assert before["success_markers"]

    # kill points: as each output's staging directory appears, and part-way into writing it
    observed = []
    for prefix, delay in (("model.staging-", 0.0), ("model.staging-", 1.0), ("quarantine.staging-", 0.2),
                          ("predictions.staging-", 0.0), ("predictions.staging-", 0.8), ("report.staging-", 0.0)):
        proc = _start_run(items_path, classes_path, out)
        hit = _wait_for(out, prefix, proc)
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        observed.append((prefix, delay, hit, proc.returncode))
        # the previous output is intact and readable, whatever the moment of the kill
        assert _snapshot(out) == before, observed
    assert sum(1 for *_, rc in observed if rc == -signal.SIGKILL) >= 4, observed

    # the next run succeeds without any manual clean-up and leaves no leftovers
    last = _start_run(items_path, classes_path, out)
    assert last.wait(timeout=600) == 0, last.stderr.read()[-3000:]
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
