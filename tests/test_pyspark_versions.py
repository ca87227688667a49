"""One run on a shared set gives the same metrics.json and predictions on pyspark 3.5 and 4.x.

scripts/test runs the whole suite on pyspark 4.x, then the tests marked pyspark35 on pyspark 3.5
(.venv-pyspark35), both with PAIRSPARK_VERSIONS_DIR naming one fresh folder: each pass records its
run there under its pyspark version and compares it with every record already there, so the 3.5
pass checks itself against 4.x. The 4.x figures are checked against independent recomputations
by test_end_to_end.py, and the 3.5 run must equal them exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pyspark
import pytest

from pairspark import pipeline
from pairspark.config import load_settings, parse_views
from tests.conftest import shared_set

ALL_METHODS = "base,pairwise,ovr,roundrobin,centroid,gnb,transductive,labelshift,cotrain"


def _column_digests(predictions: Path) -> dict[str, str]:
    """sha256 of each prediction column, rows in item_id order (the files' order is Spark's)."""
    frame = pq.read_table(predictions).to_pandas().sort_values("item_id").reset_index(drop=True)
    frame = frame.assign(**{c: frame[c].map(lambda v: repr(None if v is None else [dict(t) for t in v]))
                            for c in frame.columns if c.endswith("_top")})  # arrays as text: pandas hashes scalars
    return {c: hashlib.sha256(pd.util.hash_pandas_object(frame[c], index=False).to_numpy().tobytes()).hexdigest()
            for c in sorted(frame.columns)}


@pytest.mark.slow
@pytest.mark.pyspark35
def test_a_run_gives_the_same_metrics_and_predictions_on_every_pyspark_version(spark, tmp_path):
    shared = os.environ.get("PAIRSPARK_VERSIONS_DIR")
    if not shared:
        pytest.skip("compares the pyspark versions' runs: scripts/test sets PAIRSPARK_VERSIONS_DIR for both passes")
    folder = shared_set("fashion_clip")
    out = tmp_path / "run"
    pipeline.run(spark, str(folder / "items.parquet"), str(folder / "classes.parquet"),
                 parse_views("image=image_embedding,text=text_embedding"), str(out),
                 load_settings(None, {"methods": ALL_METHODS}), label_col="label")
    metrics = json.loads((out / "report" / "metrics.json").read_text().replace(str(out), "<out>"))
    metrics.pop("created_at", None)  # when it ran: the one field that differs between runs
    record = {"pyspark": pyspark.__version__, "metrics": metrics, "predictions": _column_digests(out / "predictions")}

    others = {p.name: json.loads(p.read_text()) for p in sorted(Path(shared).glob("pyspark-*.json"))}
    (Path(shared) / f"pyspark-{pyspark.__version__}.json").write_text(json.dumps(record, sort_keys=True))
    if pyspark.__version__.startswith("3."):
        assert any(o["pyspark"].startswith("4.") for o in others.values()), \
            f"no pyspark 4.x record in {shared}: scripts/test runs this test on 4.x first"
    for name, other in others.items():
        if other["pyspark"] == record["pyspark"]:
            continue
        differing = sorted(c for c in record["predictions"] if record["predictions"][c] != other["predictions"].get(c))
        assert not differing, f"prediction columns differing from pyspark {other['pyspark']}: {differing}"
        assert record["metrics"] == other["metrics"], f"metrics.json differs from pyspark {other['pyspark']}"
