"""Personal haplotypes as FASTA: ``python -m prep.haplotypes``.

Examples
--------
Fixed 49,152 bp windows around every TSS, two samples::

    python -m prep.haplotypes \\
        --reference data/chr22_demo/GRCh37_22_padded_realonly_20000001-21000000.fa.gz \\
        --vcf data/chr22_demo/beagle_test.chr22_20.0-20.1Mb.phased.vcf.gz \\
        --regions data/chr22_demo/tss_chr22_20-21Mb_GRCh37.tsv --length 49152 \\
        --samples HG00096,HG00097 --output haplotypes.fa.gz

Intervals exactly as ``bcftools consensus -H 1pIu`` / ``-H 2pIu`` builds them::

    python -m prep.haplotypes --reference REF.fa.gz --vcf VCF.vcf.gz --bed intervals.bed \\
        --output out.fa

Records are named ``NAME|SAMPLE|HAP`` (HAP 1 or 2). Settings may come from the ``[haplotypes]``
section of a study TOML (``--config``); flags override it. The writer: :mod:`prep.export`.
"""

from __future__ import annotations

import dataclasses
import sys

from hapflow.command import Call, Command, Option, run_command

COMMAND = Command(
    prog="python -m prep.haplotypes",
    summary="Build each sample's two haplotype sequences and write them as FASTA (records "
            "NAME|SAMPLE|HAP, HAP 1 or 2). Settings come from the [haplotypes] section of "
            "--config; flags and --set override it.",
    reads=("haplotypes",),
    config="optional",
    workdir=None,
    options=(
        Option("--reference", setting="haplotypes.reference",
               help="reference FASTA (plain or bgzip, indexed)"),
        Option("--vcf", setting="haplotypes.vcf",
               help="phased VCF/BCF (bgzipped, indexed): one file, a comma-separated list, or "
                    "a pattern with {chrom}"),
        Option("--regions", dest="tss", setting="haplotypes.tss",
               help="gene TSS table (CSV/TSV/BED); not with --bed"),
        Option("--bed", setting="haplotypes.bed",
               help="BED of intervals (bcftools-exact haplotypes); not with --regions"),
        Option("--length", type=int, metavar="L", setting="haplotypes.length",
               help="window length for --regions (default 49152)"),
        Option("--samples", setting="haplotypes.samples",
               help="comma-separated sample ids (default: all); not with --samples-file"),
        Option("--samples-file", setting="haplotypes.samples_file",
               help="file with one sample id per line"),
        Option("--snps-only", switch=True, setting="haplotypes.snps_only",
               help="apply SNPs/MNPs only (the paper's sequences)"),
        Option("--unphased", choices=("error", "reference", "as-phased", "random"),
               setting="haplotypes.unphased",
               help="what to do with unphased heterozygous genotypes (default: error)"),
        Option("--ref-mismatch", choices=("error", "skip"), setting="haplotypes.ref_mismatch",
               help="REF disagreeing with the FASTA: stop (default) or skip and count"),
        Option("--reverse-minus", switch=True, setting="haplotypes.reverse_minus",
               help="reverse-complement windows of minus-strand genes"),
        Option("--tss-one-based", choices=("true", "false"), setting="haplotypes.tss_one_based",
               help="force the TSS column to be read as 1-based or 0-based"),
        Option("--seed", type=int, metavar="N", setting="haplotypes.seed",
               help="seed of --unphased random"),
        Option("--output", "-o", required=True, help="output FASTA (.fa or .fa.gz)"),
    ),
    next_step="look at the sequences, or build a study's shards with python -m prep.shard "
              "--config C --workdir DIR",
    doc=None,
)


def run(call: Call) -> None:
    # imported here so that --help stays instant
    from prep.export import write_haplotype_fasta

    args, config = call.args, call.study.haplotypes
    if args.tss and args.bed:
        raise ValueError("give --regions (fixed windows) or --bed (intervals), not both")
    if args.bed:  # --bed on the command line wins over a TSS table in the config
        config = dataclasses.replace(config, tss=None)
    write_haplotype_fasta(config, args.output)


def main(argv: list[str] | None = None) -> int:
    """``python -m prep.haplotypes``: see the module docstring; exit 2 on bad input."""
    return run_command(COMMAND, run, argv)


if __name__ == "__main__":
    sys.exit(main())
