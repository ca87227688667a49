import tomllib
from pathlib import Path

import pytest

from pairspark.config import MarginRule, Settings, load_settings, parse_views
from pairspark.errors import UsageError

DEFAULT_TOML = Path(__file__).resolve().parents[1] / "conf" / "default.toml"


def test_conf_default_toml_matches_the_dataclass_defaults():
    assert load_settings(DEFAULT_TOML) == Settings()
    listed = set(tomllib.loads(DEFAULT_TOML.read_text())["pairspark"])
    assert listed == set(Settings.__dataclass_fields__) - {"max_dims", "partitions", "binary"}


def test_flags_win_over_the_file(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('[pairspark]\nratio_threshold = 1.5\nmin_margin = "10%"\nseed = 3\n')
    s = load_settings(conf, {"seed": 9, "min_dims": None})
    assert (s.ratio_threshold, s.min_margin, s.seed, s.min_dims) == (1.5, MarginRule(0.1, True), 9, 8)


def test_min_margin_zero_means_every_item_counts():
    s = load_settings(None, {"min_margin": "0", "min_cosine": -1})
    assert s.min_margin == MarginRule(0.0, False) and s.min_cosine == -1.0


@pytest.mark.parametrize("bad", [{"min_margin": "abc"}, {"min_margin": "120%"}, {"methods": "base,magic"}, {"min_dims": 0}])
def test_bad_settings_raise_usage_errors(bad):
    with pytest.raises(UsageError):
        load_settings(None, bad)


def test_unknown_keys_in_a_config_file_are_refused(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text("ratio_treshold = 1.3\n")
    with pytest.raises(UsageError, match="ratio_treshold"):
        load_settings(conf)


def test_views_parse_and_validate():
    assert [(v.name, v.column) for v in parse_views("image=image_embedding, text=text_embedding")] == [
        ("image", "image_embedding"),
        ("text", "text_embedding"),
    ]
    assert [(v.name, v.column) for v in parse_views("title_embedding")] == [("title_embedding", "title_embedding")]
    for bad in ["", "a=x,a=y", "a=x,b=y,c=z", "bad name=x"]:
        with pytest.raises(UsageError):
            parse_views(bad)
