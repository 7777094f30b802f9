"""analysis.baselines (analysis.variant_baselines): predictions equal direct scikit-learn fits; planted effects are recovered.

Real chr20 genotypes with expression simulated by prep.simulate (12 of the 36 genes, to stay
fast), sharded by prep.shard; the chr22 demo (real GEUVADIS expression) for genes without
variants in their window.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import polars as pl
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ElasticNetCV, LassoCV, LinearRegression, RidgeCV
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from analysis.baselines import main
from analysis.variant_baselines import BaselinesError, fit_gene, pearson_r, run_baselines
from hapflow.config import StudyConfig, load_config
from hapflow.sections import (
    BASELINE_METHODS,
    BaselinesConfig,
    ConfigError,
    HaplotypesConfig,
    ShardConfig,
    SimulateConfig,
)
from prep.dosages import DosageReader
from prep.sharding import run_shard
from prep.simulation import run_simulate
from tests.conftest import CHR20_TSS, ROOT

CONFIG = ROOT / "configs" / "chr20_sim.toml"
DEMO = ROOT / "configs" / "demo.toml"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    work = tmp_path_factory.mktemp("baselines")
    tss = work / "tss12.tsv"
    lines = CHR20_TSS.read_text().splitlines()
    tss.write_text("\n".join(lines[:1] + lines[1::3]) + "\n")  # header + 12 genes
    hcfg = dataclasses.replace(load_config(HaplotypesConfig, CONFIG, "haplotypes"), tss=str(tss))
    prep_study = StudyConfig(haplotypes=hcfg,
                             simulate=load_config(SimulateConfig, CONFIG, "simulate"),
                             shard=load_config(ShardConfig, CONFIG, "shard"))
    run_simulate(prep_study, work)
    run_shard(prep_study, work)
    bcfg = load_config(BaselinesConfig, CONFIG, "baselines")
    summary = run_baselines(StudyConfig(haplotypes=hcfg, baselines=bcfg), work, progress=False)
    return {"work": work, "hcfg": hcfg, "bcfg": bcfg, "summary": summary,
            "manifest": pl.read_parquet(work / "shards" / "manifest.parquet")}


def _read(study, method, name):
    return pl.read_parquet(study["work"] / "predictions" / method / name)


def test_outputs_cover_the_manifest(study):
    m = study["manifest"]
    for method in BASELINE_METHODS:
        for split in ("val", "test"):
            p = _read(study, method, f"{split}.parquet")
            assert p.columns[:3] == ["gene", "individual", "prediction"]
            want = m.filter(pl.col("split") == split).select("gene", "individual")
            assert p.select("gene", "individual").equals(want)
            assert p["prediction"].is_finite().all()
        w = _read(study, method, "weights.parquet")
        assert {"gene", "variant", "pos", "weight"} <= set(w.columns) and w.height > 0
        assert (w["weight"] != 0).all()
        s = json.loads((study["work"] / "predictions" / method / "summary.json").read_text())
        assert s["genes"] == 12 and s["constant_genes"] == 0
        assert (study["work"] / "predictions" / method / "config.toml").exists()
    assert _read(study, "top_snp", "genes.parquet")["n_nonzero"].to_list() == [1] * 12


def test_elastic_net_recovers_planted_effects(study):
    r = study["summary"]["elastic_net"]["mean_r_test"]
    print(f"elastic net mean test r on simulated chr20 (h2 = 0.5): {r:.3f}")
    assert r > 0.45  # oracle r = sqrt(0.5) = 0.71
    truth = pl.read_parquet(study["work"] / "expression" / "simulation_truth.parquet")
    w = _read(study, "elastic_net", "weights.parquet")
    # per gene, the causal SNP with the largest effect (or a SNP in LD) carries weight
    top = truth.sort("effect", descending=True, maintain_order=True).group_by(
        "gene", maintain_order=True).first()
    found = top.join(w, on=["gene", "pos"], how="inner").height
    assert found >= 6, f"the strongest causal SNP got a weight in only {found} of 12 genes"


def _direct_matrix(study, gene):
    """The gene's dosage matrix and target, built independently of analysis.baselines."""
    m = study["manifest"].filter(pl.col("gene") == gene)
    individuals = m["individual"].to_list()
    train = (m["split"] == "train").to_numpy()
    with DosageReader(study["hcfg"].vcf, individuals, length=study["hcfg"].length,
                      min_maf=0.05) as r:
        gd = next(r.genes(m.head(1).select("gene", "chrom", "tss"), np.flatnonzero(train)))
    x = gd.dosages.astype(np.float64)
    mu, sd = x[train].mean(axis=0), x[train].std(axis=0)
    xs = (x - mu) / sd
    return m, train, xs, m["Z"].to_numpy()


@pytest.mark.parametrize("method", BASELINE_METHODS)
def test_predictions_equal_direct_sklearn_fit(study, method):
    gene = study["manifest"]["gene"].unique(maintain_order=True)[4]
    m, train, xs, z = _direct_matrix(study, gene)
    cv = KFold(5, shuffle=True, random_state=0)
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        if method == "elastic_net":
            est = ElasticNetCV(l1_ratio=0.5, alphas=100, eps=0.01, cv=cv, max_iter=5000,
                               tol=1e-3)
        elif method == "lasso":
            est = LassoCV(alphas=100, eps=0.01, cv=cv, max_iter=5000,
                               tol=1e-3)
        elif method == "ridge":
            est = RidgeCV(alphas=np.logspace(-2, 5, 15), cv=cv,
                          scoring="neg_mean_squared_error")
        if method == "top_snp":
            r = [abs(np.corrcoef(xs[train, j], z[train])[0, 1]) for j in range(xs.shape[1])]
            j = int(np.argmax(r))
            est = LinearRegression().fit(xs[train][:, [j]], z[train])
            want = est.predict(xs[:, [j]])
        else:
            want = est.fit(xs[train], z[train]).predict(xs)
    test = (m["split"] == "test").to_numpy()
    got = _read(study, method, "test.parquet").filter(pl.col("gene") == gene)
    np.testing.assert_allclose(got["prediction"].to_numpy(), want[test], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(got["Z"].to_numpy(), z[test])


def test_rerun_same_bytes(study, tmp_path):
    bcfg = dataclasses.replace(study["bcfg"], methods=["ridge", "top_snp"], n_jobs=1)
    work = study["work"]
    before = (work / "predictions" / "ridge" / "test.parquet").read_bytes()
    run_baselines(StudyConfig(haplotypes=study["hcfg"], baselines=bcfg), work, progress=False)
    assert (work / "predictions" / "ridge" / "test.parquet").read_bytes() == before


def test_genes_without_common_variants_predict_training_mean(tmp_path):
    """chr22 demo (real GEUVADIS): most genes have no variant in their window."""
    from hapflow.config import load_study
    from prep.targets import run_expression

    run_expression(load_study(DEMO), tmp_path)
    hcfg = load_config(HaplotypesConfig, DEMO, "haplotypes")
    run_shard(StudyConfig(haplotypes=hcfg, shard=load_config(ShardConfig, DEMO, "shard")),
              tmp_path)
    s = run_baselines(StudyConfig(haplotypes=hcfg,
                                  baselines=BaselinesConfig(methods=["ridge", "top_snp"])),
                      tmp_path, progress=False)
    assert s["ridge"]["genes"] == 26 and 10 <= s["ridge"]["constant_genes"] < 26
    m = pl.read_parquet(tmp_path / "shards" / "manifest.parquet")
    gene = s["ridge"]["constant_gene_ids"][0]
    mean = m.filter((pl.col("gene") == gene) & (pl.col("split") == "train"))["Z"].mean()
    p = pl.read_parquet(tmp_path / "predictions" / "ridge" / "test.parquet").filter(
        pl.col("gene") == gene)
    np.testing.assert_allclose(p["prediction"].to_numpy(), mean, atol=1e-12)
    genes = pl.read_parquet(tmp_path / "predictions" / "ridge" / "genes.parquet")
    assert genes.filter(pl.col("gene") == gene)["n_variants"][0] == 0


def test_fit_gene_without_columns_and_pearson():
    out = fit_gene(np.zeros((5, 0)), np.arange(5.0), {"test": np.zeros((2, 0))},
                   BaselinesConfig(methods=["lasso"]))
    assert out["lasso"]["constant"] and out["lasso"]["predictions"]["test"].tolist() == [2, 2]
    # constant predictions score r = 0 (the paper's rule, hapflow.metrics); this asserted NaN
    # before issue 14 unified the rule
    assert pearson_r([1, 1, 1], [1, 2, 3]) == 0.0
    assert np.isnan(pearson_r([1, 2, 3], [1, 1, 1]))  # constant observations: undefined
    assert pearson_r([1, 2, 3], [2, 4, 7]) == pytest.approx(np.corrcoef([1, 2, 3], [2, 4, 7])[0, 1])


def test_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="lars"):
        BaselinesConfig(methods=["lars"])
    with pytest.raises(BaselinesError, match="manifest"):
        run_baselines(StudyConfig(haplotypes=load_config(HaplotypesConfig, CONFIG, "haplotypes")),
                      tmp_path, progress=False)
    assert main(["--config", str(CONFIG), "--workdir", str(tmp_path), "--quiet"]) == 2
    assert "prep.shard" in capsys.readouterr().err


def test_ridge_on_genes_whose_svd_needs_the_slower_driver(tmp_path):
    """The own-study walk of issue 15 stopped with "SVD did not converge": on the chr20 study
    of configs/chr20_own_study.toml, ENSG00000244588's training dosages in one fold (216 x 139,
    rank 45) make LAPACK's gesdd fail; ridge now falls back to gesvd and fits every gene."""
    from hapflow.config import load_study

    study = load_study(ROOT / "configs" / "chr20_own_study.toml",
                       {"baselines": {"methods": ["ridge"], "n_jobs": 1}},
                       need=("haplotypes", "simulate", "shard", "baselines"))
    run_simulate(study, tmp_path)
    run_shard(study, tmp_path)
    run_baselines(study, tmp_path, progress=False)
    ridge = pl.read_parquet(tmp_path / "predictions" / "ridge" / "test.parquet")
    assert "ENSG00000244588" in set(ridge["gene"]) and ridge["prediction"].is_finite().all()
