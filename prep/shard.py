"""Write a study's WebDataset shards: ``python -m prep.shard``.

Examples
--------
The demo study (run ``python -m prep.expression`` with the same workdir first)::

    python -m prep.shard --config configs/demo.toml --workdir work/demo

One part of eight, e.g. as a SLURM array task (the union of all parts equals one run)::

    python -m prep.shard --config study.toml --workdir /scratch/study --part ${SLURM_ARRAY_TASK_ID}/8

Reads the ``[haplotypes]`` and ``[shard]`` sections; ``--set section.key=value`` overrides any
setting. Output layout: see :mod:`prep.sharding`.
"""

from __future__ import annotations

import argparse
import sys

SECTIONS = ("haplotypes", "shard")


def parse_args(argv=None) -> argparse.Namespace:
    from hapflow.cli import add_common_arguments, make_parser

    p = make_parser("python -m prep.shard",
                    "Build every (gene, individual)'s two haplotype windows and write them, "
                    "with the targets table, as the study's WebDataset shards (DIR/shards).",
                    next_step="python -m train.run --config C --workdir DIR (or "
                              "python -m prep.verify DIR/shards)")
    add_common_arguments(p, SECTIONS, workdir_help="study working directory (writes "
                         "DIR/shards; reads DIR/expression)")
    p.add_argument("--part", metavar="K/N", help="build only part K of N, e.g. 2/8 (for job "
                   "arrays; the last part to finish writes meta.json)")
    p.add_argument("--overwrite", action="store_true",
                   help="rebuild shards of another build instead of stopping")
    p.add_argument("--workers", type=int, metavar="N",
                   help="threads, integer (default: [shard] workers; 0: all cores)")
    p.add_argument("--reference", metavar="FASTA", help="override [haplotypes] reference")
    p.add_argument("--vcf", metavar="VCF", help="override [haplotypes] vcf: one VCF/BCF, a "
                   "comma-separated list, or a pattern with {chrom}")
    p.add_argument("--tss", metavar="TABLE", help="override [haplotypes] tss (gene TSS table)")
    p.add_argument("--samples-file", metavar="FILE", help="override [haplotypes] samples_file")
    p.add_argument("--length", type=int, metavar="L",
                   help="override [haplotypes] length, integer multiple of 128")
    p.add_argument("--snps-only", action="store_true", default=None,
                   help="apply SNPs/MNPs only (the paper's sequences)")
    p.add_argument("--expression", metavar="FILE", help="override [shard] expression")
    p.add_argument("--splits", choices=("random", "population", "unseen", "file", "paper"),
                   help="override [shard] splits")
    p.add_argument("--shard-samples", type=int, metavar="N",
                   help="override [shard] shard_samples, integer")
    return p.parse_args(argv)


def split_overrides(items: list[str], sections: tuple[str, ...]) -> dict[str, dict]:
    """``["shard.seed=3"]`` -> ``{"shard": {"seed": "3"}}``; see hapflow.config.split_overrides."""
    from hapflow.config import split_overrides as split

    return split(items, sections)


def _main(argv=None) -> int:
    args = parse_args(argv)
    from hapflow.cli import setup_logging

    setup_logging(args.quiet)
    from hapflow.config import load_study
    from prep.sharding import parse_part, run_shard

    sets = split_overrides(args.set, SECTIONS)
    for section, names in (
        ("haplotypes", ("reference", "vcf", "tss", "samples_file", "length", "snps_only")),
        ("shard", ("workers", "expression", "splits", "shard_samples")),
    ):
        for name in names:
            if getattr(args, name) is not None:
                sets[section][name] = getattr(args, name)
    study = load_study(args.config, sets, need=SECTIONS)
    run_shard(study.haplotypes, study.shard, args.workdir, parse_part(args.part),
              args.overwrite)
    return 0


def main(argv=None) -> int:
    """``python -m prep.shard``: see the module docstring; exit 2 on bad input."""
    from hapflow.cli import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
