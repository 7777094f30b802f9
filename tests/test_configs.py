"""Every bundled study TOML loads: each section with its stage's dataclass, no unknown keys."""

from __future__ import annotations

import tomllib

import pytest

from tests.conftest import ROOT

CONFIGS = sorted((ROOT / "configs").glob("*.toml"))


def _section_classes() -> dict:
    from hapflow.sections import (
        BaselinesConfig,
        EnformerDataConfig,
        EvaluateConfig,
        ExpressionConfig,
        HaplotypesConfig,
        LoaderConfig,
        ModelConfig,
        MpraConfig,
        ShardConfig,
        SimulateConfig,
        TrainConfig,
    )

    return {"haplotypes": HaplotypesConfig, "expression": ExpressionConfig,
            "shard": ShardConfig, "loader": LoaderConfig, "model": ModelConfig,
            "train": TrainConfig, "baselines": BaselinesConfig, "evaluate": EvaluateConfig,
            "simulate": SimulateConfig, "enformer_data": EnformerDataConfig,
            "mpra": MpraConfig}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_section_loads(path):
    from hapflow.config import load_config

    classes = _section_classes()
    sections = tomllib.loads(path.read_text())
    unknown = sorted(set(sections) - set(classes))
    assert not unknown, f"{path.name}: sections without a stage: {unknown}"
    for name in sections:
        load_config(classes[name], path, name)


def test_geuvadis_is_the_papers_setting():

    from hapflow.config import load_study

    study = load_study(ROOT / "configs" / "geuvadis.toml", need=("model", "train", "loader"))
    model, train, loader = study.model, study.train, study.loader
    assert (model.source, model.head, model.n_bins) == ("pretrained", "attention_pool", 10)
    assert (train.strategy, train.effective_batch, train.lr, train.weight_decay,
            train.warmup_steps, train.grad_clip) == ("pairwise_regression", 64, 1e-4, 1e-3,
                                                     1000, 0.2)
    assert loader.length is None and loader.pairs_per_gene == 250


def test_chr20_own_study_is_a_whole_study_of_bundled_files():
    """configs/chr20_own_study.toml (the README's "own data in ten minutes") loads as a whole
    study, every input file it names exists, and its tiny model trains for 150 steps."""
    from pathlib import Path

    from hapflow.config import load_study

    path = ROOT / "configs" / "chr20_own_study.toml"
    study = load_study(path, need=("haplotypes", "simulate", "shard", "loader", "model",
                                   "train", "baselines", "evaluate"))
    h = study.haplotypes
    for name in (h.reference, h.vcf, h.tss):
        assert Path(name).exists(), name
    assert study.loader.epoch_batches * study.train.epochs == 150
    assert (study.model.source, study.train.device) == ("random", "cpu")
    assert study.simulate.max_distance <= study.loader.length // 2
    assert "shapeit4_unphased.chr20_1-2Mb.203.vcf.gz" in path.read_text()


def test_geuvadis_joint_is_the_papers_joint_setting():
    from hapflow.config import load_study

    study = load_study(ROOT / "configs" / "geuvadis_joint.toml",
                       need=("model", "train", "loader", "enformer_data", "mpra"))
    train = study.train
    assert train.loss_terms == {"pairwise_regression": 1.0, "enformer_human": 0.5,
                                "enformer_mouse": 0.5, "mpra": 0.1}
    assert train.mixing == "ratio" and train.stream_ratios["pairs"] == 4
    assert study.mpra.cell_types == ["K562", "HepG2", "GM12878", "SK-N-SH", "A549"]
