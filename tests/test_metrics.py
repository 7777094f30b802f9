"""analysis.metrics (and hapflow.metrics' grouped Pearson r) against scipy on the real chr22
demo's test split, plus edge cases."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.stats import pearsonr, rankdata, spearmanr, wilcoxon

from analysis.metrics import (
    bootstrap_ci,
    grouped_rank,
    grouped_spearman,
    paired_comparison,
    summarize_r,
)
from hapflow.metrics import grouped_pearson, offsets_from_counts
from tests.loader_demo import demo_shards


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Test split of the real demo: Y, Z, a seeded noisy prediction (rounded: ties), offsets."""
    manifest = demo_shards(tmp_path_factory.getbasetemp()) / "manifest.parquet"
    test = pl.read_parquet(manifest).filter(pl.col("split") == "test").sort("gene", "individual")
    counts = test.group_by("gene", maintain_order=True).len()["len"].to_numpy()
    y = test["Y"].to_numpy()
    rng = np.random.default_rng(7)
    pred = np.round(y + rng.normal(0, 0.15, y.size), 1)  # rounding makes ties for Spearman
    return {"y": y, "z": test["Z"].to_numpy(), "pred": pred,
            "offsets": offsets_from_counts(counts)}


def test_pearson_and_spearman_match_scipy_on_real_genes(demo):
    y, pred, off = demo["y"], demo["pred"], demo["offsets"]
    r, pred_const, obs_const = grouped_pearson(pred, y, off)
    rho = grouped_spearman(pred, y, off)
    assert r.shape == rho.shape == (off.size - 1,) and off.size - 1 == 26
    assert not pred_const.any() and not obs_const.any()
    for g in range(off.size - 1):
        a, b = off[g], off[g + 1]
        assert r[g] == pytest.approx(pearsonr(pred[a:b], y[a:b]).statistic, abs=1e-12)
        assert rho[g] == pytest.approx(spearmanr(pred[a:b], y[a:b]).statistic, abs=1e-12)


def test_grouped_rank_averages_ties_like_rankdata(demo):
    pred, off = demo["pred"], demo["offsets"]
    ranks = grouped_rank(pred, off)
    for g in range(off.size - 1):
        a, b = off[g], off[g + 1]
        np.testing.assert_array_equal(ranks[a:b], rankdata(pred[a:b]))
    np.testing.assert_array_equal(grouped_rank(np.array([3.0, 1.0, 3.0, 5.0, 5.0]),
                                               np.array([0, 3, 5])), [2.5, 1.0, 2.5, 1.5, 1.5])


def test_r_is_the_same_against_log_expression_and_z_score(demo):
    r_y, _, _ = grouped_pearson(demo["pred"], demo["y"], demo["offsets"])
    r_z, _, _ = grouped_pearson(demo["pred"], demo["z"], demo["offsets"])
    np.testing.assert_allclose(r_y, r_z, atol=1e-10)
    np.testing.assert_allclose(grouped_spearman(demo["pred"], demo["y"], demo["offsets"]),
                               grouped_spearman(demo["pred"], demo["z"], demo["offsets"]),
                               atol=1e-12)


def test_constant_predictions_give_zero_and_are_flagged(demo):
    y, off = demo["y"], demo["offsets"]
    pred = demo["pred"].copy()
    pred[off[3]:off[4]] = 1.25  # gene 3: the same value for every individual
    r, pred_const, obs_const = grouped_pearson(pred, y, off)
    rho = grouped_spearman(pred, y, off)
    assert r[3] == 0.0 and rho[3] == 0.0
    assert pred_const.tolist() == [g == 3 for g in range(off.size - 1)]
    assert not obs_const.any()
    assert grouped_pearson(pred, y, off, constant_r=np.nan)[0][3] != 0.0


def test_constant_observations_and_single_individuals_give_nan():
    off = np.array([0, 3, 4, 4, 7])  # sizes 3, 1, 0, 3
    obs = np.array([1.0, 1.0, 1.0, 2.0, 1.0, 2.0, 3.0])
    pred = np.array([0.1, 0.2, 0.3, 0.4, 0.3, 0.2, 0.1])
    r, pred_const, obs_const = grouped_pearson(pred, obs, off)
    assert np.isnan(r[:3]).all() and r[3] == pytest.approx(-1.0)
    assert obs_const.tolist() == [True, False, False, False]
    assert pred_const.tolist() == [False, False, False, False]


def test_offsets_are_validated():
    with pytest.raises(ValueError, match="end at len"):
        grouped_pearson(np.zeros(3), np.zeros(3), np.array([0, 2]))
    with pytest.raises(ValueError, match="non-negative"):
        offsets_from_counts(np.array([2, -1]))
    with pytest.raises(ValueError, match="prediction has 3 values, observed 2"):
        grouped_pearson(np.zeros(3), np.zeros(2), np.array([0, 3]))


def test_bootstrap_ci_contains_the_mean_and_is_seeded(demo):
    r, _, _ = grouped_pearson(demo["pred"], demo["y"], demo["offsets"])
    low, high = bootstrap_ci(r, "mean", 500, seed=3)
    assert low < r.mean() < high
    assert (low, high) == bootstrap_ci(r, "mean", 500, seed=3)
    assert (low, high) != bootstrap_ci(r, "mean", 500, seed=4)
    m_low, m_high = bootstrap_ci(r, "median", 500, seed=3)
    assert m_low <= np.median(r) <= m_high
    wide = bootstrap_ci(r, "mean", 500, seed=3, level=0.99)
    assert wide[0] <= low and wide[1] >= high
    assert bootstrap_ci(np.array([0.4]), n_boot=10) == (0.4, 0.4)
    assert all(np.isnan(bootstrap_ci(np.array([]), n_boot=10)))
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci(np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="statistic"):
        bootstrap_ci(r, "mode")


def test_summarize_r_drops_nan_and_counts(demo):
    r = np.array([0.5, -0.25, np.nan, 0.0, 0.75])
    s = summarize_r(r, 200, seed=0)
    assert s["n_genes"] == 4
    assert s["mean_r"] == pytest.approx(0.25) and s["median_r"] == pytest.approx(0.25)
    assert s["mean_abs_r"] == pytest.approx(0.375) and s["share_positive"] == 0.5
    assert s["mean_r_low"] <= s["mean_r"] <= s["mean_r_high"]


def test_paired_comparison_matches_scipy_wilcoxon(demo):
    y, off = demo["y"], demo["offsets"]
    rng = np.random.default_rng(1)
    r_a, _, _ = grouped_pearson(demo["pred"], y, off)
    r_b, _, _ = grouped_pearson(y + rng.normal(0, 0.6, y.size), y, off)
    r_b[5] = np.nan  # a gene B could not score is left out of the pairing
    out = paired_comparison(r_a, r_b, 500, seed=0)
    keep = ~np.isnan(r_b)
    d = r_a[keep] - r_b[keep]
    assert out["n_genes"] == 25
    assert out["mean_diff"] == pytest.approx(d.mean())
    assert out["wilcoxon_p"] == pytest.approx(wilcoxon(d).pvalue)
    assert out["diff_low"] < out["mean_diff"] < out["diff_high"]
    assert out["share_a_better"] == pytest.approx((d > 0).mean())
    same = paired_comparison(r_a, r_a, 100)
    assert same["mean_diff"] == 0.0 and np.isnan(same["wilcoxon_p"])


def test_per_gene_pearson_groups_unsorted_rows_like_grouped_pearson():
    from train.inference import per_gene_pearson

    rng = np.random.default_rng(0)
    gene = np.array(list("abcab" * 6 + "dde"))  # e: one row; d: constant observations
    pred, obs = rng.normal(size=gene.size), rng.normal(size=gene.size)
    obs[gene == "d"] = 1.0
    pred[gene == "c"] = 2.0  # constant predictions count as r = 0
    r = per_gene_pearson(gene.tolist(), pred, obs)
    assert sorted(r) == ["a", "b", "c"] and r["c"] == 0.0
    for g in "ab":
        m = gene == g
        assert r[g] == pytest.approx(np.corrcoef(pred[m], obs[m])[0, 1], abs=1e-12)
