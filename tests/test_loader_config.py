"""loader.config: the [loader] TOML section."""

from __future__ import annotations

import pytest

from hapflow.config import load_config
from hapflow.sections import ConfigError, LoaderConfig


def test_loader_section_from_toml_with_overrides(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('[loader]\nbatch_size = 4\nshift_fill = "N"\nmin_percentile_diff = 25\n')
    cfg = load_config(LoaderConfig, path, "loader", {"num_workers": "0"})
    assert (cfg.batch_size, cfg.shift_fill, cfg.min_percentile_diff, cfg.num_workers) == (
        4, "N", 25.0, 0)
    assert cfg.epoch_batches is None and cfg.rc_prob == 0.5 and cfg.max_shift == 3


def test_loader_section_rejects_unknown_and_bad_values(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text("[loader]\nbatchsize = 4\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(LoaderConfig, path, "loader")
    path.write_text('[loader]\nshift_fill = "zeros"\n')
    with pytest.raises(ConfigError, match="shift_fill"):
        load_config(LoaderConfig, path, "loader")


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 0, "batch_size"),
    ("rc_prob", 1.5, "rc_prob"),
    ("max_shift", -1, "max_shift"),
    ("seed", -2, "seed"),
    ("min_percentile_diff", -1.0, "min_percentile_diff"),
    ("lanes", 0, "lanes"),
])
def test_loader_config_raises_on_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        LoaderConfig(**{field: value})


def test_demo_config_loader_section_loads(root):
    cfg = load_config(LoaderConfig, root / "configs" / "demo.toml", "loader")
    assert cfg.batch_size > 0
