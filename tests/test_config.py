from dataclasses import dataclass, field

import pytest

from prep.config import ConfigError, load_config, load_toml, save_config


@dataclass(frozen=True)
class Demo:
    path: str | None = field(default=None, metadata={"path": True})
    length: int = 10
    flag: bool = False
    names: list[str] | None = None


def test_load_config_reads_section_and_resolves_paths(tmp_path):
    cfg = tmp_path / "study.toml"
    cfg.write_text('[demo]\npath = "data/x.fa"\nlength = 128\n')
    c = load_config(Demo, cfg, "demo")
    assert c.length == 128
    assert c.path == str((tmp_path / "data" / "x.fa").resolve())


def test_load_config_overrides_win_and_coerce_strings(tmp_path):
    cfg = tmp_path / "study.toml"
    cfg.write_text("[demo]\nlength = 128\n")
    c = load_config(Demo, cfg, "demo", {"length": "256", "flag": "true", "names": "a,b"})
    assert (c.length, c.flag, c.names) == (256, True, ["a", "b"])


def test_load_config_raises_on_unknown_key(tmp_path):
    cfg = tmp_path / "study.toml"
    cfg.write_text("[demo]\nlenght = 1\n")
    with pytest.raises(ConfigError, match="unknown key.*lenght"):
        load_config(Demo, cfg, "demo")


def test_load_config_raises_on_bad_type(tmp_path):
    cfg = tmp_path / "study.toml"
    cfg.write_text('[demo]\nlength = "many"\n')
    with pytest.raises(ConfigError, match="length.*not an integer"):
        load_config(Demo, cfg, "demo")


def test_save_config_round_trips(tmp_path):
    out = tmp_path / "resolved.toml"
    save_config({"demo": Demo(path="/x", length=3, names=["a"])}, out)
    assert load_toml(out)["demo"] == {"path": "/x", "length": 3, "flag": False, "names": ["a"]}
