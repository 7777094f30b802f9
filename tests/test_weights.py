"""Enformer weights folders: HF layout, safe unpickling, strict loading, conversion, hub errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hapflow.sections import ConfigError, ModelConfig
from prep.builder import HaplotypeBuilder
from tests.conftest import CHR22_REF, CHR22_VCF
from train.convert_weights import main as convert_main
from train.model import build_model
from train.weights import (
    BIN_NAME,
    CONFIG_NAME,
    SAFETENSORS_NAME,
    WeightsError,
    canonical_state_dict,
    load_enformer,
    new_enformer,
    read_state_dict,
    save_hf_directory,
)

L = 1024
DGCR8_TSS = 20_067_754  # 0-based GRCh37 TSS of DGCR8 (chr22 demo), variants nearby
TINY = dict(dim=24, depth=1, heads=2, attn_dim_key=4, dim_divisible_by=4,
            output_heads={"human": 12}, target_length=L // 128)


class NotATensor:
    """An arbitrary object: torch.load(weights_only=True) must refuse to unpickle it."""


@pytest.fixture(scope="module")
def tiny():
    """A random tiny Enformer (eval mode) and its hyper-parameters."""
    from train.weights import enformer_hparams

    torch.manual_seed(1)
    hparams = enformer_hparams(TINY)
    return new_enformer(hparams).eval(), hparams


@pytest.fixture(scope="module")
def x1():
    """Real chr22 haplotypes (4 sequences) around DGCR8's TSS, one-hot, (4, L, 4) float32."""
    samples = ["HG00096", "HG00097"]
    out = HaplotypeBuilder(CHR22_REF, CHR22_VCF, samples=samples).fixed(
        "22", np.array([DGCR8_TSS]), L)
    codes = torch.from_numpy(out.seqs[0].reshape(4, L).astype(np.int64))
    return torch.nn.functional.one_hot(codes.clamp(max=4), 5)[..., :4].float()


@pytest.fixture(scope="module")
def hf_dirs(tiny, tmp_path_factory):
    """The tiny model as an HF folder twice: full torch.save state dict, and safetensors."""
    model, hparams = tiny
    root = tmp_path_factory.mktemp("weights")
    bin_dir, st_dir = root / "bin", root / "st"
    bin_dir.mkdir()
    # As the official checkpoint: torch.save of the whole state dict, aliases included.
    torch.save(model.state_dict(), bin_dir / BIN_NAME)
    (bin_dir / CONFIG_NAME).write_text(json.dumps({**hparams, "model_type": "enformer"}))
    save_hf_directory(model, hparams, st_dir, fmt="safetensors")
    return bin_dir, st_dir


def _trunk_out(model, x1):
    with torch.no_grad():
        return model(x1)["human"]


def test_bin_and_safetensors_load_identical(tiny, hf_dirs, x1):
    model, _ = tiny
    expected = _trunk_out(model, x1)
    for d in hf_dirs:
        loaded = load_enformer(d).eval()
        assert torch.equal(_trunk_out(loaded, x1), expected), d
    # safetensors holds each tensor once: the _trunk.* aliases are dropped
    keys = set(read_state_dict(hf_dirs[1] / SAFETENSORS_NAME))
    assert not any(k.startswith("_trunk.") for k in keys)
    assert len(keys) < len(model.state_dict())


def test_load_enformer_applies_construction_settings(hf_dirs):
    loaded = load_enformer(hf_dirs[1], target_length=4, dropout_rate=0.0)
    assert loaded.crop_final.target_length == 4
    assert loaded.config.dropout_rate == 0.0
    with pytest.raises(TypeError, match="dim"):
        load_enformer(hf_dirs[1], dim=48)


def test_pickle_with_objects_is_refused(tmp_path, hf_dirs):
    path = tmp_path / BIN_NAME
    torch.save({"stem.0.weight": NotATensor()}, path)
    with pytest.raises(WeightsError, match=r"refused by torch.load\(weights_only=True\)") as err:
        read_state_dict(path)
    assert str(path) in str(err.value)


def test_non_tensor_entries_and_training_checkpoints_are_refused(tmp_path):
    path = tmp_path / "x.bin"
    torch.save({"a": torch.zeros(2), "step": 3}, path)
    with pytest.raises(WeightsError, match="not tensors .*'step'"):
        read_state_dict(path)
    torch.save({"state_dict": {"a": torch.zeros(2)}, "epoch": 1}, path)
    with pytest.raises(WeightsError, match="training checkpoint"):
        read_state_dict(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(WeightsError, match="x.bin"):
        read_state_dict(path)


def test_missing_and_unexpected_keys_are_listed(tiny, tmp_path):
    model, hparams = tiny
    state = canonical_state_dict(model)
    state.pop("stem.0.bias")
    state["extra.weight"] = torch.zeros(1)
    save_dir = tmp_path / "bad"
    save_dir.mkdir()
    torch.save(state, save_dir / BIN_NAME)
    (save_dir / CONFIG_NAME).write_text(json.dumps(hparams))
    with pytest.raises(WeightsError, match=r"missing: stem.0.bias.*unexpected: extra.weight") as e:
        load_enformer(save_dir)
    assert BIN_NAME in str(e.value)


def test_config_that_does_not_fit_the_weights(hf_dirs, tmp_path):
    d = tmp_path / "wrongdim"
    d.mkdir()
    (d / SAFETENSORS_NAME).write_bytes((hf_dirs[1] / SAFETENSORS_NAME).read_bytes())
    (d / CONFIG_NAME).write_text(json.dumps({**TINY, "dim": 48}))
    with pytest.raises(WeightsError, match="wrong shape: stem.0.weight"):
        load_enformer(d)


def test_missing_directory_config_and_weights(tmp_path, hf_dirs):
    with pytest.raises(WeightsError, match="does not exist; set model.weights"):
        load_enformer(tmp_path / "nowhere")
    no_config = tmp_path / "noconfig"
    no_config.mkdir()
    (no_config / SAFETENSORS_NAME).write_bytes((hf_dirs[1] / SAFETENSORS_NAME).read_bytes())
    with pytest.raises(WeightsError, match="config.json is missing"):
        load_enformer(no_config)
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    (no_weights / CONFIG_NAME).write_text(json.dumps(TINY))
    with pytest.raises(WeightsError, match="holds neither model.safetensors nor"):
        load_enformer(no_weights)
    (no_weights / CONFIG_NAME).write_text("{dim: 3")
    with pytest.raises(WeightsError, match="not valid JSON"):
        load_enformer(no_weights)


def test_convert_weights_round_trip_and_same_bytes(hf_dirs, tiny, tmp_path, x1):
    bin_dir, _ = hf_dirs
    out1, out2 = tmp_path / "c1", tmp_path / "c2"
    assert convert_main([str(bin_dir), str(out1), "--quiet"]) == 0
    assert convert_main([str(bin_dir), str(out2), "--quiet"]) == 0
    for name in (SAFETENSORS_NAME, CONFIG_NAME):
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes()
    assert sorted(p.name for p in out1.iterdir()) == [CONFIG_NAME, SAFETENSORS_NAME]
    converted = load_enformer(out1).eval()
    assert torch.equal(_trunk_out(converted, x1), _trunk_out(tiny[0], x1))
    assert json.loads((out1 / CONFIG_NAME).read_text())["dim"] == 24


def test_convert_weights_bad_input_is_an_error_not_a_traceback(tmp_path, capsys):
    assert convert_main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "error: weights directory" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_pretrained_source_builds_from_local_folder(hf_dirs, tiny, x1):
    cfg = ModelConfig(source="pretrained", weights=str(hf_dirs[0]), head="track", track=7,
                      n_bins=2)
    model = build_model(cfg, L).eval()
    with torch.no_grad():
        y = model(torch.stack([x1[0], x1[0]])[None], torch.tensor([L // 2]))
        direct = tiny[0](x1[:1])["human"][0, 3:5, 7].sum()  # TSS bin 4: bins 3, 4
    torch.testing.assert_close(y, direct[None], rtol=1e-5, atol=1e-6)
    assert model.trunk["use_tf_gamma"] is False  # not 196,608 bp


def test_hub_source_offline_error_suggests_local_folder():
    cfg = ModelConfig(source="hub", hub_id="hapflow-tests/no-such-enformer")
    with pytest.raises(WeightsError, match='model.source = "pretrained".*model.weights'):
        build_model(cfg, L)


def test_pretrained_without_weights_path_is_a_config_error():
    with pytest.raises(ConfigError, match="needs model.weights"):
        build_model(ModelConfig(source="pretrained"), L)
