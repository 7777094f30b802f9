"""Simulate expression on real genotypes: ``python -m prep.simulate``.

Example (the chr20 study; then ``python -m prep.shard`` with the same workdir just works)::

    python -m prep.simulate --config configs/chr20_sim.toml --workdir work/chr20_sim

Reads ``[haplotypes]`` (vcf, tss, length, samples) and ``[simulate]``. Per gene, 1-3 causal
common SNPs with known effects, heritability ``h2``; writes in ``DIR/expression/`` the matrix
(``expression.parquet``), the planted truth (``simulation_truth.parquet``), per-gene realised
h2 and oracle r (``simulation_genes.parquet``) and the resolved configuration. The model and
the tables: :mod:`prep.simulation`.
"""

from __future__ import annotations

import sys

from hapflow.command import Call, Command, Keys, Option, run_command

COMMAND = Command(
    prog="python -m prep.simulate",
    summary="Simulate expression with planted causal SNPs on real genotypes; writes "
            "DIR/expression (the matrix and the planted truth).",
    reads=("haplotypes", "simulate"),
    keys=(Keys("haplotypes", only=("vcf", "tss", "tss_one_based", "samples", "samples_file",
                                   "length"),
               why="the simulation reads the SNP dosages of each gene's window, not sequences"),),
    workdir="study working directory (writes DIR/expression)",
    options=(
        Option("--vcf", metavar="VCF", setting="haplotypes.vcf",
               help="override [haplotypes] vcf"),
        Option("--tss", metavar="TABLE", setting="haplotypes.tss",
               help="override [haplotypes] tss"),
        Option("--length", type=int, metavar="L", setting="haplotypes.length",
               help="override [haplotypes] length, integer multiple of 128"),
        Option("--samples-file", metavar="FILE", setting="haplotypes.samples_file",
               help="override [haplotypes] samples_file"),
        Option("--h2", type=float, metavar="X", setting="simulate.h2",
               help="override [simulate] h2 (heritability, 0 to 1)"),
        Option("--min-maf", type=float, metavar="X", setting="simulate.min_maf",
               help="override [simulate] min_maf"),
        Option("--seed", type=int, metavar="N", setting="simulate.seed",
               help="override [simulate] seed"),
        Option("--output", metavar="FILE", setting="simulate.output",
               help="override [simulate] output (expression Parquet)"),
    ),
    next_step="python -m prep.shard --config C --workdir DIR",
    doc=None,
)


def run(call: Call) -> None:
    # imported here so that --help stays instant
    from prep.simulation import run_simulate

    run_simulate(call.study, call.workdir)


def main(argv: list[str] | None = None) -> int:
    """``python -m prep.simulate``: see the module docstring; exit 2 on bad input."""
    return run_command(COMMAND, run, argv)


if __name__ == "__main__":
    sys.exit(main())
