"""prep.simulate on the real chr20 genotypes: seeded, h2 holds, causal SNPs common and in window."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from cyvcf2 import VCF

from hapflow.config import StudyConfig, load_config
from hapflow.sections import ConfigError, HaplotypesConfig, SimulateConfig
from prep.expression_files import read_expression
from prep.regions import read_tss_table
from prep.simulate import main
from prep.simulation import run_simulate
from tests.conftest import CHR20_TSS, CHR20_VCF, ROOT

CONFIG = ROOT / "configs" / "chr20_sim.toml"
L = 49_152


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    work = tmp_path_factory.mktemp("sim")
    hcfg = load_config(HaplotypesConfig, CONFIG, "haplotypes")
    scfg = load_config(SimulateConfig, CONFIG, "simulate")
    summary = run_simulate(StudyConfig(haplotypes=hcfg, simulate=scfg), work)
    d = work / "expression"
    return {
        "work": work, "hcfg": hcfg, "scfg": scfg, "summary": summary,
        "expression": read_expression(d / "expression.parquet"),
        "truth": pl.read_parquet(d / "simulation_truth.parquet"),
        "genes": pl.read_parquet(d / "simulation_genes.parquet"),
    }


def test_expression_readable_by_prep_targets(sim):
    expr = sim["expression"]
    tss = read_tss_table(CHR20_TSS)
    assert expr.columns[1:] == list(VCF(str(CHR20_VCF)).samples)
    assert set(expr["gene"]) <= set(tss["name"])
    assert expr.height == sim["summary"]["genes"] == 36  # every chr20 gene has common SNPs
    assert (sim["work"] / "expression" / "simulation_config.toml").exists()


def test_realised_h2_and_oracle_r_near_target(sim):
    genes = sim["genes"]
    assert abs(genes["h2_realised"].mean() - 0.5) < 0.03
    assert genes["h2_realised"].min() > 0.3 and genes["h2_realised"].max() < 0.7
    assert abs(genes["oracle_r"].mean() - np.sqrt(0.5)) < 0.03
    assert genes["n_causal"].is_between(1, 3).all()
    assert set(genes["n_causal"]) == {1, 2, 3}


def test_causal_snps_common_in_window_and_effects_explain_expression(sim):
    truth, expr = sim["truth"], sim["expression"]
    tss = dict(read_tss_table(CHR20_TSS).select("name", "tss").iter_rows())
    v = VCF(str(CHR20_VCF))
    genes = sim["genes"]
    for gene in truth["gene"].unique(maintain_order=True).to_list()[:8]:
        t = truth.filter(pl.col("gene") == gene)
        g = np.zeros(expr.width - 1)
        for row in t.iter_rows(named=True):
            assert len(row["ref"]) == 1 and len(row["alt"]) == 1
            assert tss[gene] - L // 2 <= row["pos"] - 1 < tss[gene] + L // 2
            rec = next(r for r in v(f"20:{row['pos']}-{row['pos']}")
                       if r.POS == row["pos"] and r.ALT == [row["alt"]])
            dos = (rec.genotype.array()[:, :2] == 1).sum(axis=1).astype(float)
            af = dos.mean() / 2
            assert min(af, 1 - af) == pytest.approx(row["maf"]) and row["maf"] >= 0.05
            g += row["effect"] * (dos - dos.mean())
        y = expr.filter(pl.col("gene") == gene).row(0)[1:]
        r = np.corrcoef(g, y)[0, 1]
        assert r == pytest.approx(genes.filter(pl.col("gene") == gene)["oracle_r"][0])
        assert g.var() == pytest.approx(0.5)


def test_seeded_same_bytes_and_seed_changes(sim, tmp_path):
    run_simulate(StudyConfig(haplotypes=sim["hcfg"], simulate=sim["scfg"]), tmp_path / "a")
    a = (tmp_path / "a" / "expression" / "expression.parquet").read_bytes()
    assert a == (sim["work"] / "expression" / "expression.parquet").read_bytes()
    other = SimulateConfig(seed=1)
    run_simulate(StudyConfig(haplotypes=sim["hcfg"], simulate=other), tmp_path / "b")
    b = read_expression(tmp_path / "b" / "expression" / "expression.parquet")
    assert not np.allclose(b[:, 1:].to_numpy(), sim["expression"][:, 1:].to_numpy())


def test_max_distance_and_h2_one(sim, tmp_path):
    cfg = SimulateConfig(h2=1.0, max_distance=2000, n_causal_min=1, n_causal_max=1)
    run_simulate(StudyConfig(haplotypes=sim["hcfg"], simulate=cfg), tmp_path)
    truth = pl.read_parquet(tmp_path / "expression" / "simulation_truth.parquet")
    genes = pl.read_parquet(tmp_path / "expression" / "simulation_genes.parquet")
    tss = dict(read_tss_table(CHR20_TSS).select("name", "tss").iter_rows())
    assert all(abs(p - 1 - tss[g]) <= 2000 for g, p in truth.select("gene", "pos").iter_rows())
    np.testing.assert_allclose(genes["h2_realised"], 1.0)
    assert genes["n_causal"].max() == 1


def test_config_errors():
    with pytest.raises(ConfigError, match="h2"):
        SimulateConfig(h2=1.5)
    with pytest.raises(ConfigError, match="n_causal_min"):
        SimulateConfig(n_causal_min=3, n_causal_max=2)


def test_cli(tmp_path, capsys):
    assert main(["--config", str(CONFIG), "--workdir", str(tmp_path), "--quiet",
                 "--h2", "0.2", "--set", "simulate.n_causal_max=1"]) == 0
    genes = pl.read_parquet(tmp_path / "expression" / "simulation_genes.parquet")
    assert genes["h2"].unique().to_list() == [0.2] and genes["n_causal"].max() == 1
    assert main(["--config", str(CONFIG), "--workdir", str(tmp_path), "--h2", "2"]) == 2
    assert "h2" in capsys.readouterr().err
