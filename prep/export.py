"""Export personal haplotypes as FASTA (the library of ``python -m prep.haplotypes``).

Records are named ``NAME|SAMPLE|HAP`` (HAP 1 or 2, the GT allele order), 60 bases per line,
upper case, N for unknown bases. Regions are written contig by contig in position order: fixed
windows of ``[haplotypes] length`` bases around each TSS of ``tss`` (0-based TSS at index
``L // 2``), or the intervals of ``bed`` exactly as ``bcftools consensus`` builds them.
"""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import numpy as np
import polars as pl

from hapflow.io import atomic_output, os_error_message
from hapflow.progress import progress
from hapflow.sections import HaplotypesConfig
from prep.builder import HaplotypeBuilder
from prep.encoding import ALPHABET
from prep.regions import read_bed, read_tss_table
from prep.vcf_files import read_sample_list

__all__ = ["write_haplotype_fasta", "fasta_records", "ExportError"]

log = logging.getLogger(__name__)

_COUNTED = ("applied", "missing", "overlap_skipped", "symbolic_skipped", "not_snp_skipped")


class ExportError(ValueError):
    """The FASTA cannot be written (the message names the path and the cause)."""


_LETTERS = np.frombuffer(ALPHABET, dtype=np.uint8)


def fasta_records(name: str, codes: np.ndarray, width: int = 60) -> bytes:
    """One FASTA record: ``>name`` then ``codes`` as letters, ``width`` per line.

    Parameters
    ----------
    codes : np.ndarray, shape (L,), uint8, values 0..4
    """
    letters = _LETTERS[codes]
    n = letters.shape[0]
    full = n - n % width
    body = np.empty((full // width, width + 1), dtype=np.uint8)
    body[:, :width] = letters[:full].reshape(-1, width)
    body[:, width] = ord("\n")
    tail = letters[full:].tobytes() + (b"\n" if n % width else b"")
    return b">" + name.encode() + b"\n" + body.tobytes() + tail


def write_haplotype_fasta(config: HaplotypesConfig, output: str | os.PathLike) -> dict:
    """Build the haplotypes described by ``config`` and write them to ``output`` (atomically).

    ``output`` ending in ``.gz`` is gzip-compressed. Returns a summary dict (regions, samples,
    haplotypes written, variant counts).

    Raises
    ------
    ValueError
        No reference or VCF, not exactly one of ``tss`` and ``bed``, nothing to write.
    ExportError
        The output cannot be written (naming it and the cause); nothing is left behind.
    """
    if config.reference is None or config.vcf is None:
        raise ValueError("both a reference FASTA and a VCF are needed (reference, vcf)")
    if (config.tss is None) == (config.bed is None):
        raise ValueError("give exactly one of tss (fixed windows) or bed (intervals)")
    samples = read_sample_list(config.samples, config.samples_file)
    builder = HaplotypeBuilder(
        config.reference, config.vcf, samples, snps_only=config.snps_only,
        unphased=config.unphased, ref_mismatch=config.ref_mismatch, seed=config.seed,
    )
    try:
        regions = _regions(config, builder)
        totals = _write(config, builder, regions, Path(output))
    finally:
        builder.close()
    totals["samples"] = len(builder.samples)
    log.info(
        "Wrote %d haplotypes of %d region(s) to %s; %d variant alleles applied, %d missing "
        "genotypes kept the reference, %d overlapping variants skipped",
        totals["haplotypes"], totals["regions"], output, totals["applied"], totals["missing"],
        totals["overlap_skipped"],
    )
    return totals


def _regions(config: HaplotypesConfig, builder: HaplotypeBuilder) -> pl.DataFrame:
    """The TSS table or BED intervals, every contig checked in the FASTA and VCF."""
    if config.tss is not None:
        regions = read_tss_table(config.tss, one_based=config.tss_one_based)
    else:
        regions = read_bed(config.bed)
    for chrom in regions["chrom"].unique(maintain_order=True):
        builder.reference.resolve(chrom)
        builder.variants.resolve(chrom)
    log.info(
        "Building %d region(s) x %d sample(s) x 2 haplotypes from %s and %s",
        regions.height, len(builder.samples), builder.variants.vcfs.describe(),
        Path(config.reference).name,
    )
    if regions.height == 0 or not builder.samples:
        raise ValueError(f"nothing to write: {regions.height} region(s) x "
                         f"{len(builder.samples)} sample(s); an empty selection is an error")
    return regions


def _write(config: HaplotypesConfig, builder: HaplotypeBuilder, regions: pl.DataFrame,
           output: Path) -> dict:
    """Write every record to ``output`` through a temporary file; OSErrors of the output
    become an :class:`ExportError` naming it."""
    tmp_name = None
    try:
        with atomic_output(output) as tmp:
            tmp_name = str(tmp)
            with (gzip.open(tmp, "wb", compresslevel=4) if output.name.endswith(".gz")
                  else open(tmp, "wb")) as fh:
                return _write_records(fh, config, builder, regions)
    except OSError as err:
        if isinstance(err, FileNotFoundError) and tmp_name is not None \
                and err.filename != tmp_name:
            raise  # an input file (its own message names it)
        raise ExportError(os_error_message(err, output)) from None


def _write_records(fh, config: HaplotypesConfig, builder: HaplotypeBuilder,
                   regions: pl.DataFrame) -> dict:
    """Build the regions batch by batch (contig by contig, in position order) into ``fh``."""
    n_hap = builder.n_haplotypes
    fixed = config.tss is not None
    per_batch = max(1, (config.batch_mb << 20) // (n_hap * config.length)) if fixed else 64
    totals = {"regions": 0, "haplotypes": 0, **dict.fromkeys(_COUNTED, 0)}
    with progress(total=regions.height, unit="region", desc="haplotypes", disable=None) as bar:
        for chrom_df in regions.partition_by("chrom", maintain_order=True):
            chrom_df = chrom_df.sort("tss" if fixed else "start")
            chrom = chrom_df["chrom"][0]
            for lo in range(0, chrom_df.height, per_batch):
                batch = chrom_df.slice(lo, per_batch)
                minus = (batch["strand"] == "-").to_numpy() & config.reverse_minus
                if fixed:
                    res = builder.fixed(chrom, batch["tss"].to_numpy(), config.length, minus)
                    get = lambda g, s, h, res=res: res.seqs[g, s, h]  # noqa: E731
                else:
                    res = builder.ragged(chrom, batch["start"].to_numpy(),
                                         batch["end"].to_numpy(), minus)
                    get = res.get
                for g, name in enumerate(batch["name"]):
                    for s, sample in enumerate(builder.samples):
                        for h in (0, 1):
                            fh.write(fasta_records(f"{name}|{sample}|{h + 1}", get(g, s, h)))
                for key in _COUNTED:
                    if key in res.counts:
                        totals[key] += int(res.counts[key].sum())
                totals["regions"] += batch.height
                totals["haplotypes"] += batch.height * n_hap
                bar.update(batch.height)
    return totals
