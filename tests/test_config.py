"""The CLI's settings: one declaration per setting (Params, run options), TOML and flags on top."""

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

import pytest

from pairspark.config import RUN_OPTIONS, RunOptions, load_settings, parse_binary
from pairspark.errors import UsageError
from pairspark.params import SETTING_PARAMS, HasPairsparkParams, snake
from pairspark.views import parse_views

DEFAULT_TOML = Path(__file__).resolve().parents[1] / "conf" / "default.toml"


def test_conf_default_toml_matches_the_declared_defaults():
    listed = tomllib.loads(DEFAULT_TOML.read_text())["pairspark"]
    declared = HasPairsparkParams()
    expected = {snake(p): declared.getOrDefault(p) for p in SETTING_PARAMS}
    expected.update({name: spec.default for name, spec in RUN_OPTIONS.items() if spec.default is not None})
    assert listed == expected
    assert load_settings(DEFAULT_TOML).options == RunOptions()


def test_flags_win_over_the_file(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('[pairspark]\nratio_threshold = 1.5\nmin_margin = "10%"\nseed = 3\noutput_files = 2\n')
    s = load_settings(conf, {"seed": 9, "min_dims": None})
    assert s.params == {"ratioThreshold": 1.5, "minMargin": "10%", "seed": 9}
    assert (s.seed, s.min_dims, s.output_files) == (9, 8, 2)


def test_min_margin_zero_means_every_item_counts():
    assert load_settings(None, {"min_margin": "0"}).params == {"minMargin": "0"}


@pytest.mark.parametrize("bad", [{"min_margin": "abc"}, {"min_margin": "120%"}, {"methods": "base,magic"},
                                 {"min_dims": 0}, {"ratio_threshold": "nan"}, {"ratio_threshold": float("inf")},
                                 {"min_cosine": "-inf"}, {"min_margin": "nan"}, {"min_margin": "nan%"},
                                 {"output_files": 0}, {"partitions": 1.5}, {"on_invalid": "ignore"},
                                 {"binary": "no-equals"}, {"candidates": 1}])
def test_bad_settings_raise_usage_errors(bad):
    with pytest.raises(UsageError, match=next(iter(bad))):
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


def test_binary_groups_from_a_file_may_name_classes_with_separators(tmp_path):
    groups = tmp_path / "groups.txt"
    groups.write_text("# home\nhome=Home Decor & Festive Needs\nhome=Kitchen; Dining = Bar\nwear=T-shirts, Tops\n")
    assert parse_binary(f"@{groups}") == {"home": ["Home Decor & Festive Needs", "Kitchen; Dining = Bar"],
                                          "wear": ["T-shirts, Tops"]}
    assert parse_binary("a=x,y;b=z") == {"a": ["x", "y"], "b": ["z"]}
    with pytest.raises(UsageError, match="line 1"):
        groups.write_text("just a class\n")
        parse_binary(f"@{groups}")
