"""Simulated expression on real genotypes (the library of ``python -m prep.simulate``).

For power analyses and learning-sanity checks: expression whose genetic architecture is known.
Per gene, 1-3 causal common SNPs (MAF >= 0.05 among the simulated individuals) are drawn
inside the model window ``[tss - L // 2, tss + L // 2)`` (0-based half-open, L from
``[haplotypes] length``), with standard-normal effects per standardised genotype. The genetic
value ``g`` is scaled to variance ``h2`` and noise of variance ``1 - h2`` is added, so the
simulated expression ``Y = g + e`` has heritability ``h2`` (realised values vary with the noise
draw; they are reported per gene). The best possible predictor, ``g`` itself, correlates with
``Y`` at ``r = sqrt(h2)`` in expectation: that is the oracle r a model can at most reach.

:func:`run_simulate` writes, in ``DIR/expression/`` by default (``[simulate] output``):

* ``expression.parquet`` - genes x individuals (the layout of
  :func:`prep.expression_files.read_expression`); genes without a common SNP in their window
  are left out (and counted in the log);
* ``simulation_truth.parquet`` - one row per causal variant: gene, variant
  (``CHROM:POS:REF:ALT``), pos (1-based), ref, alt, effect (per ALT allele, expression units),
  maf;
* ``simulation_genes.parquet`` - per gene: n_causal, n_candidates, h2 (target), h2_realised
  (var g / var Y), oracle_r (corr(g, Y) realised), oracle_r_expected (sqrt(h2));
* ``simulation_config.toml`` - the resolved configuration.

Seeds: each gene draws from ``numpy.random.default_rng([seed, crc32(gene id)])``, so a gene's
simulation does not depend on which other genes are simulated.
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path

import numpy as np
import polars as pl

from hapflow.config import StudyConfig, save_config
from hapflow.io import atomic_write_parquet
from hapflow.layout import Workdir
from hapflow.names import gene_key
from hapflow.progress import progress
from hapflow.sections import SimulateConfig
from prep.dosages import DosageReader, GeneDosages
from prep.expression_files import write_expression
from prep.regions import read_tss_table
from prep.vcf_files import read_sample_list

log = logging.getLogger(__name__)

__all__ = ["SimulationError", "simulate_gene", "run_simulate"]


class SimulationError(ValueError):
    """The simulation cannot run as configured; the message says what to fix."""


def simulate_gene(dosages, maf, pos0, tss, config: SimulateConfig, rng):
    """Simulate one gene's expression from its window dosages.

    Parameters
    ----------
    dosages : np.ndarray, shape (n_individuals, n_var), float32
        SNP ALT dosages (0/1/2) of the window.
    maf : np.ndarray, shape (n_var,), float64
        MAF among the same individuals.
    pos0 : np.ndarray, shape (n_var,), int64
        0-based positions (for ``max_distance``).
    tss : int
        0-based TSS.
    config : SimulateConfig
    rng : numpy.random.Generator

    Returns
    -------
    dict or None
        None when no candidate SNP exists; else ``causal`` (n_c,) column indexes, ``effect``
        (n_c,) per ALT allele, ``y`` (n_individuals,) float64 expression, ``g`` genetic value,
        ``n_candidates``.
    """
    ok = maf >= config.min_maf
    if config.max_distance is not None:
        ok &= np.abs(pos0 - tss) <= config.max_distance
    candidates = np.flatnonzero(ok)
    n_ind = dosages.shape[0]
    if candidates.size == 0:
        return None
    n_c = int(rng.integers(config.n_causal_min, config.n_causal_max + 1))
    n_c = min(n_c, candidates.size)
    causal = np.sort(rng.choice(candidates, size=n_c, replace=False))
    x = dosages[:, causal].astype(np.float64)  # (n, n_c)
    mu, sd = x.mean(axis=0), x.std(axis=0)
    beta = rng.standard_normal(n_c)  # per standardised genotype
    g = ((x - mu) / sd) @ beta  # (n,)
    sd_g = g.std()
    if not sd_g > 0:  # causal SNPs cancel exactly (perfect LD, opposite signs): redraw once
        beta = np.abs(beta)
        g = ((x - mu) / sd) @ beta
        sd_g = g.std()
    scale = np.sqrt(config.h2) / sd_g if config.h2 > 0 else 0.0
    g = g * scale
    e = rng.standard_normal(n_ind) * np.sqrt(1.0 - config.h2)
    return {
        "causal": causal,
        "effect": beta * scale / sd,  # per ALT allele
        "g": g,
        "y": g + e,
        "n_candidates": int(candidates.size),
    }


def run_simulate(study: StudyConfig, workdir: Workdir | str | os.PathLike) -> dict:
    """The ``prep.simulate`` stage: simulate every gene of ``[haplotypes] tss``; write tables.

    Parameters
    ----------
    study : StudyConfig
        ``[haplotypes]``: ``vcf``, ``tss``, ``length`` and the samples (``samples`` /
        ``samples_file``; default all of the VCF's); ``[simulate]``: the architecture.
    workdir : Workdir, str or Path
        The matrix goes to ``[simulate] output``, default ``DIR/expression/expression.parquet``;
        the truth and gene tables and the config beside it.

    Returns
    -------
    dict
        Summary: genes simulated / skipped, individuals, mean realised h2 and oracle r, paths.

    Raises
    ------
    SimulationError
        No vcf or tss, or no gene with a candidate SNP.
    """
    hcfg, config = study.haplotypes, study.simulate
    if hcfg.vcf is None or hcfg.tss is None:
        raise SimulationError("[haplotypes] needs vcf and tss to simulate expression")
    out = Path(config.output) if config.output else Workdir(workdir).expression_matrix
    genes = read_tss_table(hcfg.tss, one_based=hcfg.tss_one_based)
    samples = read_sample_list(hcfg.samples, hcfg.samples_file)
    with DosageReader(hcfg.vcf, samples, length=hcfg.length, snps_only=True,
                      min_maf=config.min_maf) as reader:
        individuals = reader.samples
        names, values, truth, per_gene, skipped = [], [], [], [], []
        for gd in progress(reader.genes(genes), total=genes.height, desc="simulating genes",
                           unit="gene", disable=not log.isEnabledFor(logging.INFO)):
            rng = np.random.default_rng([config.seed, zlib.crc32(gene_key(gd.gene).encode())])
            sim = simulate_gene(gd.dosages, gd.maf, gd.pos - 1, gd.tss, config, rng)
            if sim is None:
                skipped.append(gd.gene)
                continue
            names.append(gd.gene)
            values.append(sim["y"])
            truth.append(_truth_rows(gd, sim))
            per_gene.append(_gene_row(gd.gene, sim, config))
    if not names:
        raise SimulationError(
            f"no gene of {hcfg.tss} has a SNP with MAF >= {config.min_maf} in its "
            f"{hcfg.length:,} bp window in {hcfg.vcf}; check that the TSS table and VCF cover "
            "the same region"
        )
    if skipped:
        log.info("Left out %d gene(s) without a common SNP in the window (e.g. %s)",
                 len(skipped), skipped[0])
    matrix = pl.DataFrame({"gene": names}).hstack(
        pl.DataFrame(np.stack(values), schema=dict.fromkeys(individuals, pl.Float64),
                     orient="row"))
    return _write(study, out, matrix, pl.concat(truth), pl.DataFrame(per_gene), len(skipped))


def _truth_rows(gd: GeneDosages, sim: dict) -> pl.DataFrame:
    """simulation_truth.parquet rows of one gene: its causal variants and their effects."""
    c = sim["causal"]
    ids = gd.variant_ids()
    return pl.DataFrame({
        "gene": [gd.gene] * c.size,
        "variant": [ids[i] for i in c.tolist()],
        "pos": gd.pos[c].astype(np.int64),
        "ref": [gd.ref[i] for i in c.tolist()],
        "alt": [gd.alt[i] for i in c.tolist()],
        "effect": sim["effect"],
        "maf": gd.maf[c],
    })


def _gene_row(gene: str, sim: dict, config: SimulateConfig) -> dict:
    """simulation_genes.parquet row of one gene: causal count, target and realised h2, oracle r."""
    y, g = sim["y"], sim["g"]
    return {
        "gene": gene, "n_causal": int(sim["causal"].size), "n_candidates": sim["n_candidates"],
        "h2": config.h2, "h2_realised": float(g.var() / y.var()),
        "oracle_r": float(np.corrcoef(g, y)[0, 1]) if config.h2 > 0 else float("nan"),
        "oracle_r_expected": float(np.sqrt(config.h2)),
    }


def _write(study: StudyConfig, out: Path, matrix: pl.DataFrame, truth: pl.DataFrame,
           gene_table: pl.DataFrame, n_skipped: int) -> dict:
    """Write the matrix, the truth, the gene table and the config; log and return the summary."""
    config = study.simulate
    write_expression(matrix, out)
    truth_path = out.parent / "simulation_truth.parquet"
    genes_path = out.parent / "simulation_genes.parquet"
    atomic_write_parquet(truth, truth_path)
    atomic_write_parquet(gene_table, genes_path)
    save_config({"haplotypes": study.haplotypes, "simulate": config},
                out.parent / "simulation_config.toml")
    summary = {
        "genes": matrix.height, "skipped": n_skipped, "individuals": matrix.width - 1,
        "causal_variants": int(gene_table["n_causal"].sum()),
        "mean_h2_realised": float(gene_table["h2_realised"].mean()),
        "mean_oracle_r": float(gene_table["oracle_r"].mean()),
        "expression": str(out), "truth": str(truth_path), "genes_table": str(genes_path),
    }
    log.info(
        "Simulated %d genes x %d individuals (%d causal SNPs; target h2 %.2f, realised mean "
        "%.3f; oracle r %.3f, expected %.3f) -> %s",
        summary["genes"], summary["individuals"], summary["causal_variants"], config.h2,
        summary["mean_h2_realised"], summary["mean_oracle_r"], np.sqrt(config.h2), out,
    )
    return summary
