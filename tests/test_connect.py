"""The pyspark.ml API over Spark Connect gives the classic session's answers.

A Connect server from the installed pyspark (tests/connect_server.py) serves a client in its own
process (tests/connect_client.py: one SparkSession per process, and this one holds the classic
`spark` fixture). The client fits PairwiseTournamentClassifier, transforms, saves and loads the
model, and does the same inside a Pipeline; this process takes the same steps (the same function)
on the classic session; every step's answers must be equal.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.connect_client import OUTPUTS, run_api
from tests.connect_server import connect_server
from tests.synthetic import make_catalog, write_catalog

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "tests" / "connect_client.py"
CLIENT_TIMEOUT = 900


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with connect_server(tmp_path_factory.mktemp("connect-server")) as running:
        print(f"Connect server {running.url} pid {running.pid} up in {running.started_seconds:.1f} s")
        yield running


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    items, classes, _ = make_catalog(240, 8, 4, seed=31, noise=1.2)
    items_path, classes_path = write_catalog(tmp_path_factory.mktemp("connect-catalog"), items, classes)
    params = {"classesPath": classes_path, "views": "image=image_embedding,text=text_embedding",
              "seed": 7, "minMargin": "20%"}
    return items_path, params


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _tail(text: str, chars: int) -> str:
    return text if len(text) <= chars else "..." + text[-chars:]


def run_client(server, *args: str) -> str:
    """Run the client against the server; its stdout when it succeeds, else fail with its tails."""
    command = [sys.executable, str(CLIENT), "--remote", server.url, *args]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
        code, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as timeout:
        code, out, err = f"killed after {CLIENT_TIMEOUT} s", _text(timeout.stdout), _text(timeout.stderr)
    if code != 0:
        summary = [line for line in err.splitlines() if line.startswith("CLIENT FAILED")]
        pytest.fail(
            f"connect client exited {code}: {summary[-1] if summary else '(no summary line)'}\n"
            f"server {server.url} (pid {server.pid}, up in {server.started_seconds:.1f} s, alive: {server.alive()}), "
            f"log {server.log_path}\n"
            f"--- client stdout (tail) ---\n{_tail(out, 1500)}\n--- client stderr (tail) ---\n{_tail(err, 6000)}",
            pytrace=False,
        )
    return out


def _answers(spark, folder: Path) -> pd.DataFrame:
    """The answers as pandas, NAME_top as its (class_id, score) pairs in text (bit-exact scores)."""
    frame = spark.read.parquet(str(folder)).toPandas().sort_values("item_id").reset_index(drop=True)
    for column in [c for c in frame.columns if c.endswith("_top")]:
        frame[column] = [json.dumps([(t["class_id"], float(t["score"]).hex()) for t in top]) for top in frame[column]]
    for column in [c for c in frame.columns if c.endswith(("_path", "_path_confidence"))]:
        frame[column] = [json.dumps([x if isinstance(x, str) else float(x).hex() for x in path]) for path in frame[column]]
    return frame


def test_a_connect_client_runs_a_query(server):
    out = run_client(server, "--smoke")
    assert "SMOKE ok: spark.range(5).count() = 5" in out


def test_fit_transform_save_load_and_pipeline_over_connect_equal_the_classic_answers(spark, server, catalog, tmp_path):
    items_path, params = catalog
    run_client(server, "--items", items_path, "--params", json.dumps(params), "--out", str(tmp_path / "connect"))
    run_api(spark, items_path, params, tmp_path / "classic")

    expected = _answers(spark, tmp_path / "classic" / "answers" / "fitted")
    assert len(expected) == 240 and expected["reason"].isna().all()
    for view in ("image", "text"):
        for method in ("class", "base", "pairwise", "cotrain", "base_cosine", "margin", "confidence", "top"):
            assert expected[f"{view}_{method}"].notna().all()
        assert (expected[f"{view}_confidence"] > 0).all() and expected[f"{view}_top"].str.len().gt(2).all()
    for name in OUTPUTS:
        classic = _answers(spark, tmp_path / "classic" / "answers" / name)
        pd.testing.assert_frame_equal(classic, expected, obj=f"classic {name} vs classic fitted")
        connect = _answers(spark, tmp_path / "connect" / "answers" / name)
        pd.testing.assert_frame_equal(connect, classic, obj=f"Connect {name} vs classic {name}")


def test_a_model_above_the_connect_request_limit_transforms_over_connect_as_on_classic(spark, server, tmp_path):
    """2,400 classes x 2,304 dims: the prepared view pickles to more than Connect's 128 MiB request
    limit, so it reaches the workers as a shipped file (spark/transform.ShippedViews), on the server's
    default settings; the answers equal the classic session's, fitted and reloaded."""
    import pickle

    from pairspark.core.methods import prepare
    from pairspark.spark.model_io import load_model
    from tests.connect_client import run_large_model

    items, classes, _ = make_catalog(200, 2304, 2400, seed=3, views=("image",), noise=0.3)
    items_path, classes_path = write_catalog(tmp_path / "catalog", items, classes)
    params = {"classesPath": classes_path, "views": "image=image_embedding", "methods": "base,pairwise", "seed": 7}
    run_client(server, "--large", "--items", items_path, "--params", json.dumps(params), "--out", str(tmp_path / "connect"))
    run_large_model(spark, items_path, params, tmp_path / "classic")

    views, _ = load_model(spark, str(tmp_path / "connect" / "saved" / "large"))
    assert len(pickle.dumps([prepare(v, ("base", "pairwise")) for v in views])) > 128 * 2**20
    expected = _answers(spark, tmp_path / "classic" / "answers" / "large_fitted")
    assert len(expected) == 200 and expected["reason"].isna().all() and expected["image_pairwise"].notna().all()
    for name in ("large_fitted", "large_loaded"):
        pd.testing.assert_frame_equal(_answers(spark, tmp_path / "classic" / "answers" / name), expected)
        pd.testing.assert_frame_equal(_answers(spark, tmp_path / "connect" / "answers" / name), expected,
                                      obj=f"Connect {name} vs classic")


def test_a_class_tree_answers_over_connect_as_on_classic(spark, server, tmp_path):
    """A classes table with parent_id (tests/test_tree_pipeline.py's ragged tree): paths, path
    confidences and back-off over Connect, fitted and reloaded, equal the classic session's."""
    from tests.connect_client import run_large_model
    from tests.test_tree_pipeline import PARENTS, ancestors, tree_catalog

    items, classes, _ = make_catalog(240, 16, 6, seed=3, noise=1.2)
    items_path, _, tree_path = tree_catalog(tmp_path / "catalog", items, classes)
    params = {"classesPath": tree_path, "views": "image=image_embedding,text=text_embedding", "seed": 7}
    run_client(server, "--large", "--items", items_path, "--params", json.dumps(params), "--out", str(tmp_path / "connect"))
    run_large_model(spark, items_path, params, tmp_path / "classic")

    expected = _answers(spark, tmp_path / "classic" / "answers" / "large_fitted")
    assert len(expected) == 240 and expected["reason"].isna().all()
    for view in ("image", "text"):
        assert [json.loads(p) for p in expected[f"{view}_path"]] == [ancestors(c) for c in expected[f"{view}_class"]]
        assert expected[f"{view}_backoff"].dropna().isin(list(PARENTS)).all()
    for name in ("large_fitted", "large_loaded"):
        pd.testing.assert_frame_equal(_answers(spark, tmp_path / "classic" / "answers" / name), expected)
        pd.testing.assert_frame_equal(_answers(spark, tmp_path / "connect" / "answers" / name), expected,
                                      obj=f"Connect {name} vs classic")
