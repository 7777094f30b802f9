"""Simulate expression on real genotypes: ``python -m prep.simulate``.

For power analyses and learning-sanity checks: expression whose genetic architecture is known.
Per gene, 1-3 causal common SNPs (MAF >= 0.05 among the simulated individuals) are drawn
inside the model window ``[tss - L // 2, tss + L // 2)`` (0-based half-open, L from
``[haplotypes] length``), with standard-normal effects per standardised genotype. The genetic
value ``g`` is scaled to variance ``h2`` and noise of variance ``1 - h2`` is added, so the
simulated expression ``Y = g + e`` has heritability ``h2`` (realised values vary with the noise
draw; they are reported per gene). The best possible predictor, ``g`` itself, correlates with
``Y`` at ``r = sqrt(h2)`` in expectation: that is the oracle r a model can at most reach.

Example (the chr20 study; then ``python -m prep.shard`` with the same workdir just works)::

    python -m prep.simulate --config configs/chr20_sim.toml --workdir work/chr20_sim

Reads ``[haplotypes]`` (vcf, tss, length, samples) and ``[simulate]``. Writes, in
``DIR/expression/`` by default:

* ``expression.parquet`` - genes x individuals (the layout of
  :func:`prep.targets.read_expression`); genes without a common SNP in their window are left
  out (and counted in the log);
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

import argparse
import logging
import sys
import zlib
from pathlib import Path

from hapflow.sections import SimulateConfig

log = logging.getLogger(__name__)

__all__ = ["SimulationError", "simulate_gene", "run_simulate", "main"]


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
    import numpy as np

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


def run_simulate(hcfg, config: SimulateConfig, workdir) -> dict:
    """The ``prep.simulate`` stage: simulate every gene of ``[haplotypes] tss``; write tables.

    Parameters
    ----------
    hcfg : prep.export.HaplotypesConfig
        ``vcf``, ``tss``, ``length`` and the samples (``samples``/``samples_file``; default all
        of the VCF's).
    config : SimulateConfig
    workdir : str or Path

    Returns
    -------
    dict
        Summary: genes simulated / skipped, individuals, mean realised h2 and oracle r, paths.
    """
    import numpy as np
    import polars as pl

    from hapflow.config import save_config
    from hapflow.layout import Workdir
    from hapflow.names import gene_key
    from hapflow.progress import progress as tqdm  # a bar on a terminal, plain lines in logs
    from prep.dosages import DosageReader
    from prep.export import read_sample_list, validate_length
    from prep.expression_files import write_expression
    from prep.regions import read_tss_table

    if hcfg.vcf is None or hcfg.tss is None:
        raise SimulationError("[haplotypes] needs vcf and tss to simulate expression")
    length = validate_length(hcfg.length)
    genes = read_tss_table(hcfg.tss, one_based=hcfg.tss_one_based)
    samples = read_sample_list(hcfg.samples, hcfg.samples_file)
    out = Path(config.output) if config.output else (
        Workdir(workdir).expression / "expression.parquet")
    names, values, truth, per_gene, skipped = [], [], [], [], []
    with DosageReader(hcfg.vcf, samples, length=length, snps_only=True,
                      min_maf=config.min_maf) as reader:
        individuals = reader.samples
        for gd in tqdm(reader.genes(genes), total=genes.height, desc="simulating genes",
                       unit="gene", disable=not log.isEnabledFor(logging.INFO)):
            rng = np.random.default_rng([config.seed, zlib.crc32(gene_key(gd.gene).encode())])
            sim = simulate_gene(gd.dosages, gd.maf, gd.pos - 1, gd.tss, config, rng)
            if sim is None:
                skipped.append(gd.gene)
                continue
            c = sim["causal"]
            ids = gd.variant_ids()
            names.append(gd.gene)
            values.append(sim["y"])
            truth.append(pl.DataFrame({
                "gene": [gd.gene] * c.size,
                "variant": [ids[i] for i in c.tolist()],
                "pos": gd.pos[c].astype(np.int64),
                "ref": [gd.ref[i] for i in c.tolist()],
                "alt": [gd.alt[i] for i in c.tolist()],
                "effect": sim["effect"],
                "maf": gd.maf[c],
            }))
            y, g = sim["y"], sim["g"]
            per_gene.append({
                "gene": gd.gene, "n_causal": int(c.size), "n_candidates": sim["n_candidates"],
                "h2": config.h2, "h2_realised": float(g.var() / y.var()),
                "oracle_r": float(np.corrcoef(g, y)[0, 1]) if config.h2 > 0 else float("nan"),
                "oracle_r_expected": float(np.sqrt(config.h2)),
            })
    if not names:
        raise SimulationError(
            f"no gene of {hcfg.tss} has a SNP with MAF >= {config.min_maf} in its {length:,} bp "
            f"window in {hcfg.vcf}; check that the TSS table and VCF cover the same region"
        )
    if skipped:
        log.info("Left out %d gene(s) without a common SNP in the window (e.g. %s)",
                 len(skipped), skipped[0])
    matrix = pl.DataFrame({"gene": names}).hstack(
        pl.DataFrame(np.stack(values), schema=dict.fromkeys(individuals, pl.Float64),
                     orient="row"))
    write_expression(matrix, out)
    truth_path = out.parent / "simulation_truth.parquet"
    genes_path = out.parent / "simulation_genes.parquet"
    _write_parquet(pl.concat(truth), truth_path)
    gene_table = pl.DataFrame(per_gene)
    _write_parquet(gene_table, genes_path)
    save_config({"haplotypes": hcfg, "simulate": config}, out.parent / "simulation_config.toml")
    summary = {
        "genes": len(names), "skipped": len(skipped), "individuals": len(individuals),
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


def _write_parquet(df, path: Path) -> None:
    import io

    from hapflow.io import atomic_write_bytes

    buf = io.BytesIO()
    df.write_parquet(buf)
    atomic_write_bytes(path, buf.getvalue())


def parse_args(argv=None) -> argparse.Namespace:
    from hapflow.cli import add_common_arguments, make_parser

    p = make_parser("python -m prep.simulate",
                    "Simulate expression with planted causal SNPs on real genotypes; writes "
                    "DIR/expression (the matrix and the planted truth).",
                    next_step="python -m prep.shard --config C --workdir DIR")
    add_common_arguments(p, ("haplotypes", "simulate"),
                         workdir_help="study working directory (writes DIR/expression)")
    p.add_argument("--vcf", metavar="VCF", help="override [haplotypes] vcf")
    p.add_argument("--tss", metavar="TABLE", help="override [haplotypes] tss")
    p.add_argument("--length", type=int, metavar="L",
                   help="override [haplotypes] length, integer multiple of 128")
    p.add_argument("--samples-file", metavar="FILE", help="override [haplotypes] samples_file")
    p.add_argument("--h2", type=float, metavar="X",
                   help="override [simulate] h2 (heritability, 0 to 1)")
    p.add_argument("--min-maf", type=float, metavar="X", help="override [simulate] min_maf")
    p.add_argument("--seed", type=int, metavar="N", help="override [simulate] seed")
    p.add_argument("--output", metavar="FILE",
                   help="override [simulate] output (expression Parquet)")
    return p.parse_args(argv)


def _main(argv=None) -> int:
    args = parse_args(argv)
    from hapflow.cli import setup_logging

    setup_logging(args.quiet)
    from hapflow.config import load_study, split_overrides

    sets = split_overrides(args.set, ("haplotypes", "simulate"))
    for section, names in (("haplotypes", ("vcf", "tss", "length", "samples_file")),
                           ("simulate", ("h2", "min_maf", "seed", "output"))):
        for name in names:
            if getattr(args, name) is not None:
                sets[section][name] = getattr(args, name)
    study = load_study(args.config, sets, need=("haplotypes", "simulate"))
    run_simulate(study.haplotypes, study.simulate, args.workdir)
    return 0


def main(argv=None) -> int:
    """``python -m prep.simulate``: see the module docstring; exit 2 on bad input."""
    from hapflow.cli import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
