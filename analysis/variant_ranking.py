"""Variants ranked over a set of individuals, and compared with the elastic net's weights.

Ranking (``GENE.variants.parquet``): with ``c[i, v]`` the effect of variant v in individual i
(0 where i does not carry it; :func:`analysis.mutagenesis.attribute_gene`) and ``p[i]`` the
personal predictions,

* ``variance_drop`` = ``(var(p) - var(p - c[:, v])) / var(p)``: the share of the variance of
  predictions across the set that disappears when v is reverted in everyone. ``p - c[:, v]`` is
  exactly each individual's reverted prediction, so this is exact, not a linear approximation;
  the ranking sorts on it.
* ``variance_share`` = ``cov(c[:, v], p) / var(p)``: an additive decomposition (the shares sum
  to 1 when the model is additive over variants).

Comparison with the elastic net (``DIR/predictions/elastic_net/weights.parquet``, from
``python -m analysis.baselines``): its per-allele weight of each variant is joined by variant id,
and the Pearson and Spearman correlations between the mean per-allele ISM effect and the EN
weight, over variants with a non-zero EN weight, go into the summary. Both are per ALT allele
and share their sign convention; their scales differ (the EN predicts the per-gene z-score).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
from scipy.stats import pearsonr, spearmanr

from analysis.personal_variants import AttributionError

__all__ = ["rank_variants", "compare_elastic_net"]


def rank_variants(effects: pl.DataFrame, predictions: dict[str, float]) -> pl.DataFrame:
    """Rank the variants of a set of individuals by the prediction variance they explain.

    Parameters
    ----------
    effects : pl.DataFrame
        The effects table of :func:`attribute_gene`.
    predictions : dict individual -> personal prediction (every individual of the set, also
        those carrying no variant)

    Returns
    -------
    pl.DataFrame
        One row per variant: variant, chrom, pos, ref, alt, kind, n_individuals, n_carriers,
        allele_count, mean_effect (over carriers), mean_effect_per_allele, mean_abs_effect,
        dosage_variance, variance_drop, variance_share (null with fewer than two individuals
        or constant predictions), rank (1 = most variance explained; by mean |effect| when
        variance is undefined). See the module docstring for the formulas.
    """
    people = list(predictions)
    n = len(people)
    p = np.array([predictions[i] for i in people], dtype=np.float64)  # (n,)
    variants = (effects.group_by("variant", maintain_order=True)
                .agg(pl.col("chrom", "pos", "ref", "alt", "kind").first())
                .sort("pos", "ref", "alt", maintain_order=True))
    vid = {v: j for j, v in enumerate(variants["variant"].to_list())}
    row = {ind: i for i, ind in enumerate(people)}
    c = np.zeros((n, len(vid)))  # (n, n_var) effect, 0 where not carried
    dose = np.zeros((n, len(vid)))
    ii = np.array([row[i] for i in effects["individual"].to_list()], dtype=np.int64)
    jj = np.array([vid[v] for v in effects["variant"].to_list()], dtype=np.int64)
    c[ii, jj] = effects["effect"].to_numpy()
    dose[ii, jj] = effects["dosage"].to_numpy()
    carriers = (dose > 0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_effect = c.sum(axis=0) / carriers
        per_allele = np.where(dose > 0, c / np.where(dose > 0, dose, 1), 0.0).sum(0) / carriers
        mean_abs = np.abs(c).sum(axis=0) / carriers
    var_p = p.var() if n else 0.0
    defined = n >= 2 and var_p > 0
    if defined:
        drop = (var_p - (p[:, None] - c).var(axis=0)) / var_p
        share = ((c - c.mean(0)) * (p - p.mean())[:, None]).mean(axis=0) / var_p
        order = np.lexsort((np.arange(len(vid)), -mean_abs, -drop))
    else:
        drop = share = np.full(len(vid), np.nan)
        order = np.lexsort((np.arange(len(vid)), -mean_abs))
    rank = np.empty(len(vid), dtype=np.int64)
    rank[order] = np.arange(1, len(vid) + 1)
    return variants.with_columns(
        n_individuals=pl.lit(n, dtype=pl.Int64),
        n_carriers=pl.Series(carriers.astype(np.int64)),
        allele_count=pl.Series(dose.sum(axis=0).astype(np.int64)),
        mean_effect=pl.Series(mean_effect), mean_effect_per_allele=pl.Series(per_allele),
        mean_abs_effect=pl.Series(mean_abs),
        dosage_variance=pl.Series(dose.var(axis=0) if n else np.full(len(vid), np.nan)),
        variance_drop=pl.Series(drop, dtype=pl.Float64).fill_nan(None),
        variance_share=pl.Series(share, dtype=pl.Float64).fill_nan(None),
        rank=pl.Series(rank),
    ).sort("rank")


def compare_elastic_net(ranking: pl.DataFrame, weights_path: str | os.PathLike,
                        gene: str) -> tuple[pl.DataFrame, dict | None]:
    """Join the elastic net's weights of ``gene`` to the variant ranking, by variant id.

    Parameters
    ----------
    ranking : pl.DataFrame from :func:`rank_variants`
    weights_path : ``DIR/predictions/elastic_net/weights.parquet`` (gene, variant, weight,
        weight_per_allele, ...; non-zero weights only)

    Returns
    -------
    (pl.DataFrame, dict or None)
        The ranking with columns en_weight and en_weight_per_allele (null where the EN has no
        non-zero weight), and ``{"weights": path, "n_en_variants", "n_shared", "pearson",
        "spearman"}`` (correlations of mean_effect_per_allele with en_weight_per_allele over
        shared variants; null with fewer than 3 or a constant side), or None without a file.
    """
    path = Path(weights_path)
    if not path.exists():
        return ranking.with_columns(en_weight=pl.lit(None, pl.Float64),
                                    en_weight_per_allele=pl.lit(None, pl.Float64)), None
    try:
        w = pl.read_parquet(path, columns=["gene", "variant", "weight", "weight_per_allele"])
    except Exception as err:  # polars raises several types on bad files
        raise AttributionError(f"cannot read elastic-net weights {path}: {err}") from None
    w = w.filter(pl.col("gene") == gene).select(
        "variant", en_weight="weight", en_weight_per_allele="weight_per_allele")
    joined = ranking.join(w, on="variant", how="left", maintain_order="left")
    shared = joined.filter(pl.col("en_weight_per_allele").is_not_null()
                           & pl.col("mean_effect_per_allele").is_not_nan())
    a = shared["mean_effect_per_allele"].to_numpy()
    b = shared["en_weight_per_allele"].to_numpy()
    stats = {"weights": str(path), "n_en_variants": w.height, "n_shared": shared.height,
             "pearson": None, "spearman": None}
    if shared.height >= 3 and np.ptp(a) > 0 and np.ptp(b) > 0:
        stats["pearson"] = float(pearsonr(a, b).statistic)
        stats["spearman"] = float(spearmanr(a, b).statistic)
    return joined, stats
