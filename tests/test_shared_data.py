"""The shared data sets are there, and a test that needs a missing one fails (CI never passes
without them) unless the user asked to skip them."""

from __future__ import annotations

import pytest

from tests import conftest


@pytest.mark.parametrize("name", ["agnews", "fashion_clip", "fashion_lvis", "fashion_tree"])
def test_every_shared_set_is_present(name):
    assert (conftest.shared_set(name) / "items.parquet").exists()


def test_a_missing_shared_set_fails_with_a_clear_message_unless_skipping_is_asked_for(monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "SHARED_DATA", tmp_path)
    monkeypatch.delenv(conftest.SKIP_MISSING_DATA, raising=False)
    with pytest.raises(pytest.fail.Exception, match=rf"shared data set agnews not found at {tmp_path}/agnews.*PAIRSPARK_DATA"):
        conftest.shared_set("agnews")
    monkeypatch.setenv(conftest.SKIP_MISSING_DATA, "1")
    with pytest.raises(pytest.skip.Exception, match="not found"):
        conftest.shared_set("agnews")
