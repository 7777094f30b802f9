"""Allele dosages of the variants in each gene's model window, for variant-based baselines.

The window of a gene is the one the shards hold: 0-based half-open ``[tss - L // 2,
tss + L // 2)`` around the 0-based reference TSS. A variant is in the window when its VCF POS
(1-based; 0-based ``POS - 1``, the first REF base) lies in it; a deletion starting before the
window is not, even when it overlaps it.

Dosages are read through :class:`prep.variants.VariantReader`, once per batch of nearby genes
(one region read covers the batch), never once per sample; memory is bounded by one batch
(``2 x n_samples x n_records`` int16 genotypes plus one gene's float32 matrix at a time).

Encoding, per individual and ALT allele (a multi-allelic record gives one column per ALT):

* dosage = number of haplotypes carrying that ALT allele: 0, 1 or 2 (float32). Phase does not
  matter, so unphased genotypes are read as written. A haploid call counts once (its missing
  second haplotype is the reference, as the haplotype engine builds it).
* a genotype with a missing allele (``./.``, ``0/.``) is **missing** and is mean-imputed with
  ``2 x AF``, the ALT frequency among the MAF individuals' called genotypes (training
  individuals, so that held-out individuals never shape the matrix).
* symbolic alleles (``<DEL>``, ``*``, breakends) have no column.

MAF = ``min(AF, 1 - AF)`` with AF computed on a given subset of individuals (``maf_rows``,
typically the gene's training individuals); ``min_maf`` keeps columns with ``MAF >= min_maf``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from prep.variants import SYMBOLIC, SYMBOLIC_DEL, VariantBlock, VariantReader

__all__ = [
    "GeneDosages",
    "DosageReader",
    "window_bounds",
    "block_dosages",
]

log = logging.getLogger(__name__)


def window_bounds(tss: int, length: int) -> tuple[int, int]:
    """The model window of a TSS: 0-based half-open ``[tss - length // 2, tss + length // 2)``.

    Parameters
    ----------
    tss : int
        0-based reference position of the TSS base.
    length : int
        Window length L (even, as the shards' lengths are multiples of 128).
    """
    if length <= 0 or length % 2:
        raise ValueError(f"window length {length} must be a positive even number")
    return int(tss) - length // 2, int(tss) + length // 2


@dataclass(frozen=True)
class GeneDosages:
    """The dosage matrix of one gene.

    Attributes
    ----------
    gene : str
        Gene id as given in the gene table.
    chrom : str
        Contig as the VCF spells it.
    tss : int
        0-based TSS; the window is ``[start, end)``, 0-based half-open.
    start, end : int
    pos : np.ndarray, shape (n_var,), int64
        **1-based** VCF POS of each column's record.
    ref, alt : list of str, length n_var
        REF and the column's ALT allele (multi-allelic records: one column per ALT).
    dosages : np.ndarray, shape (n_individuals, n_var), float32
        ALT allele counts 0/1/2 (missing genotypes mean-imputed, see the module docstring);
        rows follow the reader's samples.
    maf : np.ndarray, shape (n_var,), float64
        Minor allele frequency among the MAF individuals.
    n_missing : np.ndarray, shape (n_var,), int64
        Individuals (all rows) whose genotype was missing and imputed.
    """

    gene: str
    chrom: str
    tss: int
    start: int
    end: int
    pos: np.ndarray
    ref: list[str]
    alt: list[str]
    dosages: np.ndarray
    maf: np.ndarray
    n_missing: np.ndarray

    @property
    def n_variants(self) -> int:
        return int(self.pos.shape[0])

    def variant_ids(self) -> list[str]:
        """``CHROM:POS:REF:ALT`` (POS 1-based) of every column."""
        return [f"{self.chrom}:{p}:{r}:{a}"
                for p, r, a in zip(self.pos.tolist(), self.ref, self.alt, strict=True)]


def _columns(block: VariantBlock, start: int, end: int, snps_only: bool):
    """Record index and ALT number (1-based) of each column of window ``[start, end)``."""
    rec = np.flatnonzero((block.pos >= start) & (block.pos < end))
    n_alleles = block.allele_flags.shape[0]
    n_alt = np.diff(np.append(block.first_allele, n_alleles))[rec]
    col_rec = np.repeat(rec, n_alt)  # (n_col,)
    # ALT number within the record: 1, 2, ... n_alt
    col_k = np.arange(col_rec.shape[0]) - np.repeat(np.cumsum(n_alt) - n_alt, n_alt) + 1
    allele = block.first_allele[col_rec] + col_k - 1  # row in the allele table
    keep = (block.allele_flags[allele] & (SYMBOLIC | SYMBOLIC_DEL)) == 0  # sequence ALTs only
    if snps_only:
        alt_len = np.diff(block.allele_offsets)[allele]
        keep &= (block.ref_len[col_rec] == 1) & (alt_len == 1)
    return col_rec[keep], col_k[keep]


def block_dosages(
    block: VariantBlock,
    start: int,
    end: int,
    *,
    maf_rows: np.ndarray | None = None,
    snps_only: bool = False,
    min_maf: float = 0.0,
):
    """Dosages of the records of ``block`` whose POS lies in ``[start, end)`` (0-based).

    Parameters
    ----------
    block : VariantBlock
        Read for a span covering the window (any number of samples ``n``).
    start, end : int
        0-based half-open window.
    maf_rows : np.ndarray, shape (m,), int64 or bool (n,), optional
        Individuals (rows of the block's samples) on which AF/MAF and the imputation mean are
        computed; default all.
    snps_only : bool
        Keep only single-base REF and ALT (SNPs); indels and MNPs are dropped.
    min_maf : float
        Keep columns with ``MAF >= min_maf`` (0 keeps monomorphic ones too).

    Returns
    -------
    dict
        ``rec`` (n_var,) int64 record index in the block, ``alt_k`` (n_var,) ALT number,
        ``dosages`` (n, n_var) float32, ``maf`` (n_var,) float64, ``n_missing`` (n_var,) int64.
    """
    if not 0.0 <= min_maf <= 0.5:
        raise ValueError(f"min_maf={min_maf} must be in [0, 0.5]")
    rec, k = _columns(block, start, end, snps_only)
    hap = block.hap_allele[:, rec]  # (2n, n_col) int16, rows 2*s + h
    h0, h1 = hap[0::2], hap[1::2]  # (n, n_col)
    k16 = k.astype(np.int16)
    dos = (h0 == k16).astype(np.float32) + (h1 == k16).astype(np.float32)
    missing = (h0 < 0) | (h1 < 0)
    n = dos.shape[0]
    rows = np.arange(n) if maf_rows is None else np.asarray(maf_rows)
    if rows.dtype == bool:
        if rows.shape != (n,):
            raise ValueError(f"maf_rows mask has shape {rows.shape}; expected ({n},)")
        rows = np.flatnonzero(rows)
    called = ~missing[rows]  # (m, n_col)
    n_called = called.sum(axis=0)
    alt_sum = np.where(called, dos[rows], 0.0).sum(axis=0, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        af = alt_sum / (2.0 * n_called)  # nan where no MAF individual is called
    maf = np.minimum(af, 1.0 - af)
    if missing.any():
        fill = np.broadcast_to(np.nan_to_num(2.0 * af).astype(np.float32), dos.shape)
        dos = np.where(missing, fill, dos)
    keep = maf >= min_maf  # nan (never called) is dropped
    return {
        "rec": rec[keep],
        "alt_k": k[keep],
        "dosages": np.ascontiguousarray(dos[:, keep]),
        "maf": maf[keep],
        "n_missing": missing[:, keep].sum(axis=0).astype(np.int64),
    }


class DosageReader:
    """Read per-gene dosage matrices from a phased (or unphased) VCF/BCF.

    Parameters
    ----------
    vcf : str or Path
        bgzipped, indexed VCF/BCF.
    samples : list of str, optional
        Individuals (matrix rows, in this order); default all of the VCF's.
    length : int
        Window length L; gene windows are ``[tss - L // 2, tss + L // 2)``.
    snps_only : bool
        Keep SNPs only.
    min_maf : float
        Minimum MAF (on each gene's MAF individuals).
    batch_bp : int
        Genes are read together while the union of their windows spans at most this many
        bases (one VCF region read per batch).
    """

    def __init__(
        self,
        vcf: str | os.PathLike,
        samples: list[str] | None = None,
        *,
        length: int = 49_152,
        snps_only: bool = False,
        min_maf: float = 0.0,
        batch_bp: int = 2_000_000,
    ):
        window_bounds(0, length)  # validate
        if not 0.0 <= min_maf <= 0.5:
            raise ValueError(f"min_maf={min_maf} must be in [0, 0.5]")
        self.reader = VariantReader(vcf, samples, unphased="as-phased")
        self.samples = self.reader.samples
        self.length = int(length)
        self.snps_only = bool(snps_only)
        self.min_maf = float(min_maf)
        self.batch_bp = int(batch_bp)

    def close(self) -> None:
        self.reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def genes(
        self,
        genes: pl.DataFrame,
        maf_rows: Mapping[str, np.ndarray] | np.ndarray | None = None,
    ) -> Iterator[GeneDosages]:
        """Yield one :class:`GeneDosages` per gene, in (chrom, tss) order.

        Parameters
        ----------
        genes : pl.DataFrame
            Columns ``gene`` (or ``name``, as :func:`prep.regions.read_tss_table` gives),
            ``chrom`` and ``tss`` (0-based).
        maf_rows : mapping gene -> rows, or rows, optional
            MAF individuals as row indices (int) or a mask (bool, one per sample): the same for
            every gene, or per gene (a gene missing from the mapping uses all rows).
        """
        name = "gene" if "gene" in genes.columns else "name"
        missing = {name, "chrom", "tss"} - set(genes.columns)
        if missing:
            raise ValueError(f"the gene table lacks column(s) {', '.join(sorted(missing))}")
        table = genes.select(pl.col(name).alias("gene"), "chrom", pl.col("tss").cast(pl.Int64))
        table = table.with_columns(
            vchrom=pl.col("chrom").map_elements(self.reader.resolve, return_dtype=pl.String)
        ).sort("vchrom", "tss", maintain_order=True)
        half = self.length // 2
        for batch in self._batches(table, half):
            lo = int(batch["tss"].min()) - half
            hi = int(batch["tss"].max()) + half
            vchrom = batch["vchrom"][0]
            block = self.reader.read(vchrom, max(lo, 0), hi)
            for gene, tss in zip(batch["gene"].to_list(), batch["tss"].to_list(), strict=True):
                rows = maf_rows.get(gene) if isinstance(maf_rows, Mapping) else maf_rows
                yield self._gene(block, gene, vchrom, int(tss), rows)

    def _batches(self, table: pl.DataFrame, half: int) -> Iterator[pl.DataFrame]:
        chrom = table["vchrom"].to_numpy()
        tss = table["tss"].to_numpy()
        first = 0
        for i in range(1, table.height + 1):
            if (i == table.height or chrom[i] != chrom[first]
                    or tss[i] - tss[first] + 2 * half > self.batch_bp):
                yield table.slice(first, i - first)
                first = i

    def _gene(self, block, gene, chrom, tss, rows) -> GeneDosages:
        start, end = window_bounds(tss, self.length)
        out = block_dosages(block, start, end, maf_rows=rows, snps_only=self.snps_only,
                            min_maf=self.min_maf)
        rec, k = out["rec"], out["alt_k"]
        return GeneDosages(
            gene=gene, chrom=chrom, tss=tss, start=start, end=end,
            pos=block.pos[rec] + 1,
            ref=[block.ref_alleles[r] for r in rec.tolist()],
            alt=[block.alt_alleles[r][j - 1] for r, j in zip(rec.tolist(), k.tolist(),
                                                              strict=True)],
            dosages=out["dosages"], maf=out["maf"], n_missing=out["n_missing"],
        )
