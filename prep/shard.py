"""Write a study's WebDataset shards: ``python -m prep.shard``.

Examples
--------
The demo study (run ``python -m prep.expression`` with the same workdir first)::

    python -m prep.shard --config configs/demo.toml --workdir work/demo

One part of eight, e.g. as a SLURM array task (the union of all parts equals one run)::

    python -m prep.shard --config study.toml --workdir /scratch/study \\
        --part ${SLURM_ARRAY_TASK_ID}/8

Reads the ``[haplotypes]`` and ``[shard]`` sections; ``--set section.key=value`` overrides any
setting. Output layout: see :mod:`prep.sharding`.
"""

from __future__ import annotations

import sys

from hapflow.command import Call, Command, Keys, Option, run_command

COMMAND = Command(
    prog="python -m prep.shard",
    summary="Record every (gene, individual)'s two haplotypes as edits against its gene's "
            "reference span (stored once per gene) and write them, with the targets table, as "
            "the study's WebDataset shards (DIR/shards, shard format 3); windows of any length "
            "up to [haplotypes] length + 2 x [shard] flank are built from them on read.",
    reads=("haplotypes", "shard"),
    keys=(Keys("haplotypes", skips=("bed",),
               why="shards hold fixed windows around each TSS ([haplotypes] tss)"),
          Keys("haplotypes", skips=("batch_mb",),
               why="prep.shard's memory budget is [shard] batch_mb")),
    workdir="study working directory (writes DIR/shards; reads DIR/expression)",
    options=(
        Option("--part", metavar="K/N", help="build only part K of N, e.g. 2/8 (for job "
               "arrays; the last part to finish writes meta.json)"),
        Option("--overwrite", switch=True,
               help="rebuild shards of another build instead of stopping"),
        Option("--workers", type=int, metavar="N", setting="shard.workers",
               help="threads, integer (default: [shard] workers; 0: all cores)"),
        Option("--reference", metavar="FASTA", setting="haplotypes.reference",
               help="override [haplotypes] reference"),
        Option("--vcf", metavar="VCF", setting="haplotypes.vcf",
               help="override [haplotypes] vcf: one VCF/BCF, a comma-separated list, or a "
                    "pattern with {chrom}"),
        Option("--tss", metavar="TABLE", setting="haplotypes.tss",
               help="override [haplotypes] tss (gene TSS table)"),
        Option("--samples-file", metavar="FILE", setting="haplotypes.samples_file",
               help="override [haplotypes] samples_file"),
        Option("--length", type=int, metavar="L", setting="haplotypes.length",
               help="override [haplotypes] length (the widest window), integer multiple of "
                    "128 up to 524288"),
        Option("--snps-only", switch=True, setting="haplotypes.snps_only",
               help="apply SNPs/MNPs only (the paper's sequences)"),
        Option("--expression", metavar="FILE", setting="shard.expression",
               help="override [shard] expression"),
        Option("--splits", choices=("random", "population", "unseen", "file", "paper"),
               setting="shard.splits", help="override [shard] splits"),
        Option("--shard-samples", type=int, metavar="N", setting="shard.shard_samples",
               help="override [shard] shard_samples, integer"),
    ),
    next_step="python -m train.run --config C --workdir DIR (or python -m prep.verify "
              "DIR/shards)",
    doc=None,
)


def run(call: Call) -> None:
    # imported here so that --help stays instant
    from prep.sharding import parse_part, run_shard

    run_shard(call.study, call.workdir, parse_part(call.args.part), call.args.overwrite)


def main(argv: list[str] | None = None) -> int:
    """``python -m prep.shard``: see the module docstring; exit 2 on bad input."""
    return run_command(COMMAND, run, argv)


if __name__ == "__main__":
    sys.exit(main())
