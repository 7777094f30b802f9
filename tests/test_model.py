"""The expression model: shapes, TSS bins, haplotype modes, compile, batch norm, freezing, export."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from hapflow.sections import ConfigError, ModelConfig
from loader.device import to_one_hot
from prep.builder import HaplotypeBuilder
from tests.conftest import CHR22_REF, CHR22_VCF
from train.export import load_exported, save_exported
from train.model import (
    FrozenBatchNorm1d,
    apply_batchnorm_policy,
    build_model,
    unwrap,
)

L = 2048  # 16 bins of 128 bp
DGCR8_TSS = 20_067_754  # 0-based GRCh37 TSS of DGCR8 (chr22 demo), variants nearby
SAMPLES = ["HG00096", "HG00097", "HG00099", "HG00100"]
# The smallest kind of Enformer: ~19k parameters, 7 downsamplings (128 bp bins).
TINY = ModelConfig(dim=24, depth=1, heads=2, attn_dim_key=4, dim_divisible_by=4,
                   output_heads_human=8, n_bins=4)


def tiny(**changes) -> ModelConfig:
    return dataclasses.replace(TINY, **changes)


def built(cfg: ModelConfig = TINY, length: int = L, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(cfg, length)


def _windows(length: int) -> torch.Tensor:
    out = HaplotypeBuilder(CHR22_REF, CHR22_VCF, samples=SAMPLES).fixed(
        "22", np.array([DGCR8_TSS]), length)
    return to_one_hot(torch.from_numpy(out.seqs[0]))  # (4, 2, L, 4) float32


@pytest.fixture(scope="module")
def x():
    """Real diploid one-hot windows around DGCR8's TSS: (4 individuals, 2, L, 4) float32."""
    x = _windows(L)
    assert (x[:, 0] != x[:, 1]).any(), "the fixture needs heterozygous individuals"
    return x


@pytest.fixture(scope="module")
def model():
    return built().eval()


def test_shapes_and_dtype(model, x):
    tss = torch.full((4,), L // 2)
    y = model(x, tss)
    assert y.shape == (4,) and y.dtype == torch.float32
    emb = model.embeddings(x[:, 0])
    assert emb.shape == (4, L // 128, 48)  # 2 * dim features
    assert model.length == L and model.config is TINY and model.n_total_bins == 16
    # bfloat16 one-hot from the loader is accepted
    assert model(x.to(torch.bfloat16), tss).dtype == torch.float32


def test_tss_bins_follow_tss_index(model, x):
    emb = model.embeddings(x[:, 0])  # (4, 16, 48)
    tss = torch.tensor([1024, 1024 + 127, 0, 2047])  # bins 8, 8, 0, 15
    got = model.tss_bins(emb, tss)
    assert torch.equal(got[0], emb[0, 6:10])  # tss_bin - 2 .. tss_bin + 1
    assert torch.equal(got[1], emb[1, 6:10])
    assert torch.equal(got[2], emb[2, 0:4])  # moved inwards at the start
    assert torch.equal(got[3], emb[3, 12:16])  # and at the end
    paper = built(tiny(n_bins=10)).eval()
    assert torch.equal(paper.tss_bins(emb, torch.tensor([1024]))[0], emb[0, 3:13])  # 8-5..8+4


def test_prediction_depends_on_tss_index(model, x):
    with torch.no_grad():
        centre = model(x, torch.full((4,), L // 2))
        same_bin = model(x, torch.full((4,), L // 2 + 100))
        shifted = model(x, torch.full((4,), L // 2 + 3 * 128))
        mixed = model(x, torch.tensor([L // 2, L // 2 + 384, L // 2, L // 2 + 384]))
    assert torch.equal(centre, same_bin)
    assert not torch.equal(centre, shifted)
    assert torch.equal(mixed[[0, 2]], centre[[0, 2]])
    assert torch.equal(mixed[[1, 3]], shifted[[1, 3]])


def test_average_is_mean_of_single_haplotype_runs(model, x):
    tss = torch.tensor([1024, 1000, 1100, 900])
    with torch.no_grad():
        both = model(x, tss)
        hap1 = model(x[:, [0, 0]], tss)  # both haplotypes = haplotype 1
        hap2 = model(x[:, [1, 1]], tss)
    torch.testing.assert_close(both, (hap1 + hap2) / 2, rtol=1e-5, atol=1e-7)
    assert not torch.equal(hap1, hap2)  # real heterozygous sites matter


def test_mean_onehot_feeds_the_mean_once(model, x):
    mean_model = built(tiny(haplotypes="mean_onehot")).eval()
    mean_model.load_state_dict(model.state_dict())
    tss = torch.full((4,), L // 2)
    with torch.no_grad():
        y = mean_model(x, tss)
        expected = model.head(model.tss_bins(model.embeddings(x.mean(dim=1)), tss))
        average = model(x, tss)
    torch.testing.assert_close(y, expected)
    assert not torch.equal(y, average)


def test_build_is_deterministic_given_the_seed():
    a, b, c = built(seed=3).state_dict(), built(seed=3).state_dict(), built(seed=4).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert not any(k.startswith(("_trunk", "_heads", "module.", "_orig_mod.")) for k in a)


def test_compile_fullgraph_has_no_graph_break(x):
    # "eager" runs Dynamo's tracing (a graph break raises with fullgraph=True) without codegen;
    # AOT backends ("aot_eager") hit a torch 2.13 bug in BatchNorm's backward after Linear.
    for cfg in (TINY, tiny(haplotypes="mean_onehot", checkpointing=True)):
        m = built(cfg).train()
        torch._dynamo.reset()
        compiled = torch.compile(m, fullgraph=True, backend="eager")
        tss = torch.tensor([1024, 900, 1200, 1024])
        compiled(x, tss).sum().backward()
        assert unwrap(compiled) is m
        assert m.head.output.weight.grad is not None


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available() and shutil.which("g++") is None
                    and shutil.which("c++") is None,
                    reason="inductor on CPU needs a C++ compiler")
def test_inductor_forward_equals_eager():
    """torch.compile's real backend (inductor: C++ on CPU, about 1-2 minutes to build on two
    cores; Triton on a GPU) gives the eager model's predictions."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    m = built(length=1024).eval().to(device)
    x = _windows(1024).to(device)
    tss = torch.tensor([512, 500, 530, 512], device=device)
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, tss), m(x, tss), rtol=1e-4, atol=1e-5)


def _bn_layers(m):
    return [mod for mod in m.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]


def _train_step(m, x):
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    m.train()
    y = m(x, torch.full((x.shape[0],), L // 2))
    y.square().mean().backward()
    opt.step()


def test_frozen_batchnorm_keeps_statistics_through_a_training_step(x):
    m = built(tiny(batchnorm="frozen"))
    bns = _bn_layers(m)
    assert bns and all(type(b) is FrozenBatchNorm1d for b in bns)
    before = [(b.running_mean.clone(), b.weight.clone()) for b in bns]
    _train_step(m, x)
    assert m.training and not any(b.training for b in bns)
    assert all(not p.requires_grad for b in bns for p in b.parameters())
    for b, (mean, weight) in zip(bns, before, strict=True):
        assert torch.equal(b.running_mean, mean) and torch.equal(b.weight, weight)
    assert m.head.output.weight.grad is not None


def test_local_batchnorm_updates_statistics(x):
    m = built(tiny(batchnorm="local"))
    bns = _bn_layers(m)
    assert all(type(b) is nn.BatchNorm1d for b in bns)
    before = [b.running_mean.clone() for b in bns]
    _train_step(m, x)
    assert all(b.training for b in bns)
    assert all(not torch.equal(b.running_mean, mean) for b, mean in zip(bns, before, strict=True))


def test_batchnorm_policy_is_idempotent_and_converts_sync(model):
    m = built()
    m.load_state_dict(model.state_dict())
    nn.SyncBatchNorm.convert_sync_batchnorm(m)  # as enformer-pytorch builds under DDP
    assert all(type(b) is nn.SyncBatchNorm for b in _bn_layers(m))
    apply_batchnorm_policy(m, "local")
    apply_batchnorm_policy(m, "local")
    assert all(type(b) is nn.BatchNorm1d for b in _bn_layers(m))
    state, ref = m.state_dict(), model.state_dict()
    assert state.keys() == ref.keys() and all(torch.equal(state[k], ref[k]) for k in ref)
    apply_batchnorm_policy(m, "frozen")
    apply_batchnorm_policy(m, "frozen")
    assert all(type(b) is FrozenBatchNorm1d for b in _bn_layers(m))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_sync_batchnorm_without_gpus_is_a_clear_error():
    with pytest.raises(ConfigError, match="SyncBatchNorm runs on CUDA"):
        built(tiny(batchnorm="sync"))


def test_build_under_an_initialised_process_group_gives_plain_batchnorm(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        m = built(tiny(batchnorm="local"))
        assert all(type(b) is nn.BatchNorm1d for b in _bn_layers(m))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("freeze, frozen", [
    ("none", ()),
    ("conv_tower", ("stem.", "conv_tower.")),
    ("transformer", ("transformer.",)),
    ("trunk", ("stem.", "conv_tower.", "transformer.", "final_pointwise.")),
])
def test_freeze_sets_requires_grad(freeze, frozen):
    m = built(tiny(freeze=freeze))
    for name, p in m.named_parameters():
        assert p.requires_grad == (not name.startswith(frozen)), name
    assert all(p.requires_grad for p in m.head.parameters())


def test_checkpointing_gives_the_same_gradients(x):
    no_dropout = dict(dropout_rate=0.0, attn_dropout=0.0, pos_dropout=0.0, depth=2)
    plain, ckpt = built(tiny(**no_dropout)), built(tiny(checkpointing=True, **no_dropout))
    tss = torch.full((4,), L // 2)
    for m in (plain, ckpt):
        m.train()
        m(x, tss).sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters(),
                                     strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_clear_errors_at_build_time():
    with pytest.raises(ConfigError, match=r"model.track = 8 is outside .*0..7"):
        built(tiny(head="track", track=8))
    with pytest.raises(ConfigError, match="not a positive multiple of the trunk's 128 bp"):
        built(length=1000)
    with pytest.raises(ConfigError, match="more than the 8 bins"):
        built(tiny(n_bins=10), length=1024)
    with pytest.raises(ConfigError, match="use_tf_gamma = true needs 1,536 trunk bins"):
        built(tiny(use_tf_gamma=True))
    with pytest.raises(ConfigError, match="multiple of 6"):
        built(tiny(dim=32, heads=2))
    assert built().trunk["use_tf_gamma"] is False  # None resolves to off for random weights


def test_export_round_trip_gives_identical_outputs(model, x, tmp_path):
    cfg = tiny(head="track", track=3, batchnorm="frozen", freeze="conv_tower")
    m = built(cfg).eval()
    compiled = torch.compile(m)  # saving a wrapped model writes the plain module's state
    save_exported(compiled, cfg, L, tmp_path / "a")
    save_exported(m, cfg, L, tmp_path / "b")
    for name in ("model.safetensors", "model.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    meta = json.loads((tmp_path / "a" / "model.json").read_text())
    assert meta["length"] == L and meta["model"]["track"] == 3 and meta["trunk"]["dim"] == 24
    loaded = load_exported(tmp_path / "a")
    tss = torch.tensor([1024, 900, 1300, 1024])
    with torch.no_grad():
        assert torch.equal(loaded(x, tss), m(x, tss))
    assert loaded.config == cfg and not loaded.training
    assert all(type(b) is FrozenBatchNorm1d for b in _bn_layers(loaded))


def test_load_exported_errors(tmp_path, model):
    from train.weights import WeightsError

    with pytest.raises(WeightsError, match="model.json is missing"):
        load_exported(tmp_path)
    save_exported(model, TINY, L, tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="model.safetensors is not a readable safetensors"):
        load_exported(tmp_path)
