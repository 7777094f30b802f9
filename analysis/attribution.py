"""Variant attribution of one gene, run by ``python -m analysis.attribute``.

For one gene and one or more individuals, every variant an individual carries in the gene's
window is reverted to the reference allele, one at a time, and the fine-tuned model predicts the
reverted window: the variant's **effect** is ``prediction(personal) - prediction(reverted)``
(positive: the ALT allele raises predicted expression). For a set of individuals, variants are
ranked by how much of the variance of predictions across them they explain.

:func:`run_attribution` ties the parts together:

* :mod:`analysis.personal_variants` — the gene's window and the variants each individual carries;
* :mod:`analysis.mutagenesis` — the reverted windows and the model's predictions of them;
* :mod:`analysis.variant_ranking` — the ranking over the individuals and the comparison with
  the elastic net's weights;
* :mod:`analysis.attribution_plot` — the plot.

Writes in ``DIR/attribution/RUN/`` (GENE = the gene id of the TSS table):

* ``GENE.parquet`` - one row per (individual, variant): gene, symbol, individual, variant,
  chrom, pos (1-based), ref, alt, kind (snp / mnp / indel), haplotypes ("0", "1" or "0,1"),
  dosage, offset_from_tss (POS - TSS, both 1-based reference coordinates), window_index (index
  of the variant's first base in the model's window; null where an indel the individual carries
  between it and the TSS shifts it), prediction (personal), prediction_reverted, effect;
  rows in the individuals' order, then by position;
* ``GENE.variants.parquet`` - one row per variant, ranked (:mod:`analysis.variant_ranking`),
  with en_weight and en_weight_per_allele where the elastic net has them;
* ``GENE.png`` - effect along the window (TSS marked), the EN weights below when present;
* ``GENE.json`` - summary: individuals, predictions, counts, EN correlation, top variants;
* ``GENE.config.toml`` - the resolved ``[haplotypes]`` and ``[attribute]`` settings.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import polars as pl

from analysis.attribution_plot import plot_effects
from analysis.mutagenesis import attribute_gene
from analysis.personal_variants import (
    AttributionError,
    GeneWindow,
    check_individuals,
    find_gene,
    split_individuals,
)
from analysis.variant_ranking import compare_elastic_net, rank_variants
from hapflow.config import StudyConfig
from hapflow.io import atomic_write_json, atomic_write_parquet
from hapflow.layout import Workdir
from train.distributed import setup
from train.prediction import load_predictor

log = logging.getLogger(__name__)

__all__ = ["run_attribution"]


def run_attribution(study: StudyConfig, workdir: str | os.PathLike | Workdir, run: str,
                    gene: str, *, individuals: list[str] | None = None,
                    split: str | None = None) -> dict:
    """Attribute a gene's predictions to personal variants and write the outputs.

    Parameters
    ----------
    study : StudyConfig
        Reads ``[haplotypes]`` (reference, vcf, tss) and ``[attribute]``.
    workdir : Workdir or path
        The study folder (reads DIR/runs/RUN, DIR/shards, DIR/predictions/elastic_net;
        writes DIR/attribution/RUN).
    run : str
        The fine-tuned run.
    gene : str
        Gene id (version optional) or symbol of the TSS table.
    individuals : list of str, optional
        VCF samples; default the gene's individuals of ``split``.
    split : str, optional
        Manifest split (default ``[attribute] split``); not with ``individuals``.

    Returns
    -------
    dict : the summary written to ``GENE.json``
    """
    hcfg, cfg = study.haplotypes, study.attribute
    for key in ("reference", "vcf", "tss"):
        if getattr(hcfg, key) is None:
            raise AttributionError(f"{study.path or 'the study'} [haplotypes] has no {key}: set "
                                   f"it (or --set haplotypes.{key}=PATH)")
    if individuals is not None and split is not None:
        raise AttributionError("give --individuals or --split, not both")
    layout = Workdir(workdir)
    d = setup(cfg.device)
    p = load_predictor(study, layout, d.device, run=run)
    window = find_gene(hcfg.tss, gene, p.length, bool(p.haplotypes.get("reverse_minus")))
    if individuals is None:
        individuals = _split_individuals(layout, window, split or cfg.split,
                                         cfg.max_individuals)
    check_individuals(hcfg.vcf, individuals)
    effects, facts = attribute_gene(p, d.device, hcfg.reference, hcfg.vcf, window, individuals,
                                    cfg.batch_size, cfg.rc_average)
    predictions = {i: facts[i]["prediction"] for i in individuals}
    ranking = rank_variants(effects, predictions)
    en_path = layout.predictor("elastic_net") / "weights.parquet"
    ranking, en = compare_elastic_net(ranking, en_path, window.gene)
    files = _files(layout.attribution_of(run), window.gene)
    atomic_write_parquet(effects, files["effects"])
    atomic_write_parquet(ranking, files["variants"])
    en_weights = None
    if en is not None:
        en_weights = pl.read_parquet(en_path, columns=["gene", "pos", "weight_per_allele"]
                                     ).filter(pl.col("gene") == window.gene)
    plot_effects(effects, window, files["plot"], run=run, ranking=ranking, top=min(cfg.top, 10),
                 en_weights=en_weights)
    study.save(files["config"], ("haplotypes", "attribute"))
    summary = _summary(window, run, bool(p.haplotypes.get("snps_only")), individuals, facts,
                       effects, ranking, en, cfg.top, files)
    atomic_write_json(files["summary"], summary, allow_nan=False, default=_json_default)
    _log_summary(window, summary, en, files)
    return summary


def _split_individuals(layout: Workdir, window: GeneWindow, split: str, most: int) -> list[str]:
    """The gene's individuals of ``split`` in the manifest, sorted, the first ``most`` (0: all)."""
    individuals = split_individuals(layout, window.gene, split)
    if most and len(individuals) > most:
        log.info("Taking the first %d of the %d %s individuals of %s (max_individuals)",
                 most, len(individuals), split, window.label)
        individuals = individuals[:most]
    return individuals


def _file_stem(gene: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in gene)


def _files(out: Path, gene: str) -> dict[str, Path]:
    """The five output files of ``gene`` in ``out`` (``DIR/attribution/RUN``)."""
    stem = _file_stem(gene)
    return {"effects": out / f"{stem}.parquet", "variants": out / f"{stem}.variants.parquet",
            "plot": out / f"{stem}.png", "summary": out / f"{stem}.json",
            "config": out / f"{stem}.config.toml"}


def _summary(window: GeneWindow, run: str, snps_only: bool, individuals: list[str],
             facts: dict, effects: pl.DataFrame, ranking: pl.DataFrame, en: dict | None,
             top: int, files: dict[str, Path]) -> dict:
    """The content of ``GENE.json``."""
    predictions = [facts[i]["prediction"] for i in individuals]
    best = ranking.head(top).select("rank", "variant", "n_carriers", "mean_effect",
                                    "variance_drop", "variance_share")
    return {
        "gene": window.gene, "symbol": window.symbol, "chrom": window.chrom,
        "tss_1based": window.tss + 1, "strand": window.strand, "run": run,
        "length": window.length, "window_1based": [window.start + 1, window.end],
        "reverse_complemented": window.minus,
        "snps_only": snps_only,
        "individuals": individuals,
        "per_individual": facts,
        "variants": ranking.height,
        "reverted": effects.height,
        "indels_reverted": int((effects["kind"] == "indel").sum()),
        "skipped_symbolic": sum(f["n_symbolic"] for f in facts.values()),
        "skipped_not_snp": sum(f["n_not_snp"] for f in facts.values()),
        "prediction_variance": float(np.var(predictions)),
        "elastic_net": en,
        "top_variants": best.to_dicts(),
        "files": {k: str(v) for k, v in files.items()},
    }


def _log_summary(window: GeneWindow, summary: dict, en: dict | None,
                 files: dict[str, Path]) -> None:
    log.info("%s: %d individuals, %d (individual, variant) reversions (%d indels; skipped: %d "
             "symbolic, %d length-changing in a SNPs-only run), %d distinct variants",
             window.label, len(summary["individuals"]), summary["reverted"],
             summary["indels_reverted"], summary["skipped_symbolic"],
             summary["skipped_not_snp"], summary["variants"])
    if en is not None:
        log.info("Elastic net: %d of its %d weighted variants are among them; r(ISM effect per "
                 "allele, EN weight per allele) = %s", en["n_shared"], en["n_en_variants"],
                 "n/a" if en["pearson"] is None else f"{en['pearson']:.3f}")
    log.info("Wrote %s (table), %s (ranking), %s (plot)", files["effects"], files["variants"],
             files["plot"])


def _json_default(v):
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")
