"""Personal haplotypes as FASTA: ``python -m prep.haplotypes``.

Examples
--------
Fixed 49,152 bp windows around every TSS, all samples::

    python -m prep.haplotypes --reference data/chr22_demo/GRCh37_22_padded_realonly_20000001-21000000.fa.gz \\
        --vcf data/chr22_demo/beagle_test.chr22_20.0-20.1Mb.phased.vcf.gz \\
        --regions data/chr22_demo/tss_chr22_20-21Mb_GRCh37.tsv --length 49152 \\
        --samples HG00096,HG00097 --output haplotypes.fa.gz

Intervals exactly as ``bcftools consensus -H 1pIu`` / ``-H 2pIu`` builds them::

    python -m prep.haplotypes --reference REF.fa.gz --vcf VCF.vcf.gz --bed intervals.bed \\
        --output out.fa

Records are named ``NAME|SAMPLE|HAP`` (HAP 1 or 2). Settings may come from the ``[haplotypes]``
section of a study TOML (``--config``); flags override it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys


def parse_args(argv=None) -> argparse.Namespace:
    from hapflow.cli import add_common_arguments, make_parser

    p = make_parser("python -m prep.haplotypes",
                    "Build each sample's two haplotype sequences and write them as FASTA "
                    "(records NAME|SAMPLE|HAP, HAP 1 or 2). Settings come from the "
                    "[haplotypes] section of --config; flags and --set override it.",
                    next_step="look at the sequences, or build a study's shards with "
                              "python -m prep.shard --config C --workdir DIR")
    add_common_arguments(p, ("haplotypes",), workdir=False, config_required=False)
    p.add_argument("--reference", help="reference FASTA (plain or bgzip, indexed)")
    p.add_argument("--vcf", help="phased VCF/BCF (bgzipped, indexed): one file, a comma-separated list, or a pattern with {chrom}")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--regions", dest="tss", help="gene TSS table (CSV/TSV/BED)")
    g.add_argument("--bed", help="BED of intervals (bcftools-exact haplotypes)")
    p.add_argument("--length", type=int, metavar="L", help="window length for --regions (default 49152)")
    s = p.add_mutually_exclusive_group()
    s.add_argument("--samples", help="comma-separated sample ids (default: all)")
    s.add_argument("--samples-file", help="file with one sample id per line")
    p.add_argument("--snps-only", action="store_true", default=None,
                   help="apply SNPs/MNPs only (the paper's sequences)")
    p.add_argument("--unphased", choices=["error", "reference", "as-phased", "random"],
                   help="what to do with unphased heterozygous genotypes (default: error)")
    p.add_argument("--ref-mismatch", choices=["error", "skip"],
                   help="REF disagreeing with the FASTA: stop (default) or skip and count")
    p.add_argument("--reverse-minus", action="store_true", default=None,
                   help="reverse-complement windows of minus-strand genes")
    p.add_argument("--tss-one-based", choices=["true", "false"],
                   help="force the TSS column to be read as 1-based or 0-based")
    p.add_argument("--seed", type=int, metavar="N", help="seed of --unphased random")
    p.add_argument("--output", "-o", required=True, help="output FASTA (.fa or .fa.gz)")
    return p.parse_args(argv)


def _main(argv=None) -> int:
    args = parse_args(argv)
    from hapflow.cli import setup_logging

    setup_logging(args.quiet)
    from hapflow.config import load_study, split_overrides
    from prep.export import write_haplotype_fasta

    sets = split_overrides(args.set, ("haplotypes",))
    for k in ("reference", "vcf", "tss", "bed", "length", "samples", "samples_file",
              "snps_only", "unphased", "ref_mismatch", "reverse_minus", "seed",
              "tss_one_based"):
        if getattr(args, k) is not None:
            sets["haplotypes"][k] = getattr(args, k)
    config = load_study(args.config, sets, need=("haplotypes",)).haplotypes
    if args.bed:  # --bed on the command line wins over a TSS table in the config
        config = dataclasses.replace(config, tss=None)
    write_haplotype_fasta(config, args.output)
    return 0


def main(argv=None) -> int:
    """``python -m prep.haplotypes``: see the module docstring; exit 2 on bad input."""
    from hapflow.cli import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
