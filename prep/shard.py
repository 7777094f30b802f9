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
import logging
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m prep.shard",
                                description="Build haplotypes and write WebDataset shards.")
    p.add_argument("--config", required=True, help="study TOML ([haplotypes] and [shard])")
    p.add_argument("--workdir", required=True, help="study working directory (writes DIR/shards)")
    p.add_argument("--part", help="K/N: build only part K of N (for job arrays)")
    p.add_argument("--overwrite", action="store_true", help="rebuild shards that already exist")
    p.add_argument("--workers", type=int, help="threads (default: all cores)")
    p.add_argument("--reference", help="override [haplotypes] reference")
    p.add_argument("--vcf", help="override [haplotypes] vcf: one VCF/BCF, a comma-separated list, or a pattern with {chrom}")
    p.add_argument("--tss", help="override [haplotypes] tss (gene TSS table)")
    p.add_argument("--samples-file", help="override [haplotypes] samples_file")
    p.add_argument("--length", type=int, help="override [haplotypes] length")
    p.add_argument("--snps-only", action="store_true", default=None,
                   help="apply SNPs/MNPs only (the paper's sequences)")
    p.add_argument("--expression", help="override [shard] expression")
    p.add_argument("--splits", help="override [shard] splits (random, population, unseen, "
                   "file, paper)")
    p.add_argument("--shard-samples", type=int, help="override [shard] shard_samples")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a setting, e.g. --set shard.group_size=32")
    p.add_argument("--quiet", action="store_true", help="only warnings and errors")
    return p.parse_args(argv)


def split_overrides(items: list[str], sections: tuple[str, ...]) -> dict[str, dict]:
    """``["shard.seed=3"]`` -> ``{"shard": {"seed": "3"}}``; unknown sections are an error."""
    out: dict[str, dict] = {s: {} for s in sections}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in out:
            raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE with SECTION one of "
                             f"{', '.join(sections)}")
        out[section][name] = value
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(message)s")
    from prep.config import ConfigError, load_config
    from prep.contigs import ContigError
    from prep.export import HaplotypesConfig
    from prep.reference import ReferenceError
    from prep.regions import RegionError
    from prep.shard_format import ShardFormatError
    from prep.sharding import ShardConfig, ShardError, parse_part, run_shard
    from prep.splits import SplitError
    from prep.targets import ExpressionError
    from prep.variants import VcfError

    try:
        sets = split_overrides(args.set, ("haplotypes", "shard"))
        for section, names in (
            ("haplotypes", ("reference", "vcf", "tss", "samples_file", "length", "snps_only")),
            ("shard", ("workers", "expression", "splits", "shard_samples")),
        ):
            for name in names:
                if getattr(args, name) is not None:
                    sets[section][name] = getattr(args, name)
        hcfg = load_config(HaplotypesConfig, args.config, "haplotypes", sets["haplotypes"])
        scfg = load_config(ShardConfig, args.config, "shard", sets["shard"])
        run_shard(hcfg, scfg, args.workdir, parse_part(args.part), args.overwrite)
    except (ConfigError, ContigError, ReferenceError, RegionError, ShardError, ShardFormatError,
            SplitError, ExpressionError, VcfError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
