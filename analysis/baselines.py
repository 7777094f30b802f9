"""Fit variant-based baselines per gene: ``python -m analysis.baselines``.

Examples
--------
After ``python -m prep.shard`` with the same study and workdir::

    python -m analysis.baselines --config configs/chr20_sim.toml --workdir work/chr20_sim

Only ridge and the top SNP, on the variants of a 4,096 bp window::

    python -m analysis.baselines --config configs/demo.toml --workdir work/demo \\
        --methods ridge,top_snp --length 4096

Reads the ``[haplotypes]`` and ``[baselines]`` sections; ``--set section.key=value`` overrides
any setting. What is fitted and written: see :mod:`analysis.variant_baselines`.
"""

from __future__ import annotations

import sys

from hapflow.command import Call, Command, Keys, Option, run_command

COMMAND = Command(
    prog="python -m analysis.baselines",
    summary="Fit PrediXcan/FUSION-style variant baselines (elastic net, LASSO, ridge, top SNP) "
            "per gene on the study's training individuals; writes DIR/predictions/NAME/.",
    reads=("haplotypes", "baselines"),
    keys=(Keys("haplotypes", only=("vcf", "length"),
               why="the baselines read the genotype dosages of the window around each TSS of "
                   "the shards' genes, for the shards' individuals"),),
    workdir="study working directory (reads DIR/shards, writes DIR/predictions)",
    options=(
        Option("--vcf", metavar="VCF", setting="haplotypes.vcf",
               help="override [haplotypes] vcf"),
        Option("--length", type=int, metavar="L", setting="haplotypes.length",
               help="override [haplotypes] length"),
        Option("--methods", metavar="A,B", setting="baselines.methods",
               help="override [baselines] methods (comma-separated)"),
        Option("--min-maf", type=float, metavar="X", setting="baselines.min_maf",
               help="override [baselines] min_maf"),
        Option("--folds", type=int, metavar="N", setting="baselines.folds",
               help="override [baselines] folds"),
        Option("--seed", type=int, metavar="N", setting="baselines.seed",
               help="override [baselines] seed"),
        Option("--n-jobs", type=int, metavar="N", setting="baselines.n_jobs",
               help="override [baselines] n_jobs"),
        Option("--target", choices=("Z", "Y"), setting="baselines.target",
               help="override [baselines] target"),
    ),
    next_step="python -m analysis.evaluate --config C --workdir DIR",
    doc=None,
)


def run(call: Call) -> None:
    # imported here so that --help stays instant
    from analysis.variant_baselines import run_baselines

    run_baselines(call.study, call.workdir, progress=not call.args.quiet)


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.baselines``: see the module docstring; exit 2 on bad input."""
    return run_command(COMMAND, run, argv)


if __name__ == "__main__":
    sys.exit(main())
