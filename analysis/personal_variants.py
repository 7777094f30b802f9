"""The gene, its window and the personal variants that attribution reverts.

* :class:`GeneWindow` / :func:`find_gene` — a gene of the study's TSS table (by id, version
  optional, or symbol) and its model window ``[tss - L // 2, tss + L // 2)`` (0-based
  half-open; reverse-complemented for a minus-strand gene when the run's windows are);
* :func:`split_individuals` / :func:`check_individuals` — who is attributed;
* :func:`read_variants` — the individuals' VCF records over every base a reverted window can
  reach;
* :class:`PersonalVariants` / :func:`personal_variants` — what one individual carries there.

Which variants. Records whose POS lies in the reference window ``[tss - L // 2, tss + L // 2)``
(0-based half-open, as :mod:`prep.dosages` and the elastic net use) at which the individual
carries an ALT allele; each ALT of a multi-allelic record is a variant of its own
(``CHROM:POS:REF:ALT``, POS 1-based). Symbolic alleles other than ``<DEL>`` (never applied by
the engine; a ``<DEL>`` is a deletion of POS + 1 .. END, see :mod:`prep.variants`) and, for a
run trained on SNPs only, indels and other length-changing alleles (not in its windows) are
skipped and counted in the summary.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import polars as pl

from hapflow.layout import Workdir
from hapflow.names import gene_key
from prep.dosages import window_bounds
from prep.reference import Reference
from prep.regions import read_tss_table
from prep.variants import SYMBOLIC, VariantReader
from prep.vcf_files import VcfSet

__all__ = [
    "AttributionError",
    "GeneWindow",
    "PersonalVariants",
    "find_gene",
    "split_individuals",
    "check_individuals",
    "read_variants",
    "personal_variants",
]

_MARGIN = 4096  # reference bases read beyond the farthest base a reverted window can reach


class AttributionError(ValueError):
    """Attribution cannot run as asked; the message says what to fix."""


@dataclass(frozen=True)
class GeneWindow:
    """A gene and its model window.

    Attributes
    ----------
    gene, symbol : str
        Gene id as the TSS table gives it (e.g. ``ENSG00000183597.11``) and its symbol (or "").
    chrom : str
        Contig as the TSS table spells it.
    tss : int
        0-based reference TSS.
    strand : str
        "+" or "-".
    length : int
        Window length L; the reference window is ``[start, end) = [tss - L // 2, tss + L // 2)``
        (0-based half-open).
    minus : bool
        Whether the model's windows of this gene are reverse-complemented (``reverse_minus``).
    """

    gene: str
    symbol: str
    chrom: str
    tss: int
    strand: str
    length: int
    minus: bool

    @property
    def start(self) -> int:
        return self.tss - self.length // 2

    @property
    def end(self) -> int:
        return self.tss + self.length // 2

    @property
    def tss_index(self) -> int:
        """Index of the TSS base in the model's window (``L - 1 - L // 2`` when reversed)."""
        return self.length - 1 - self.length // 2 if self.minus else self.length // 2

    @property
    def label(self) -> str:
        return f"{self.symbol} ({self.gene})" if self.symbol else self.gene


@dataclass
class PersonalVariants:
    """The variants one individual carries in a gene's window, and the genotypes to revert.

    Attributes
    ----------
    individual : str
    chrom : str
        Contig as the VCF spells it.
    rec_pos : np.ndarray, shape (R,), int64
        0-based POS of each record the individual carries an ALT allele at (file order; every
        carried record of the span read, also those outside the window).
    rec_ref : list of str, length R
    rec_alt : list of str, length R
        REF and the comma-joined ALT alleles of each record, as in the VCF.
    alleles : np.ndarray, shape (2, R), int16
        The individual's resolved (phased) allele index per haplotype and record (0 = REF,
        k = ALT k; missing calls are 0: the engine keeps the reference for them).
    col : np.ndarray, shape (V,), int64
        Record (column of ``alleles``) of each variant in the window.
    alt_k : np.ndarray, shape (V,), int16
        Its ALT number (1-based).
    pos : np.ndarray, shape (V,), int64
        **1-based** POS.
    ref, alt : list of str, length V
        REF and this variant's ALT allele.
    kind : list of str, length V
        "snp", "mnp" (REF and ALT of equal length > 1) or "indel".
    hap_mask : np.ndarray, shape (V,), uint8
        Haplotypes carrying the ALT: bit 0 = haplotype 0 (first GT allele), bit 1 = haplotype 1.
    window_index : np.ndarray, shape (V,), int64
        Index of the variant's first base in the model's window (mirrored when the window is
        reverse-complemented); -1 where an indel the individual carries between the variant and
        the TSS (or the variant itself, upstream) shifts it.
    n_symbolic, n_not_snp : int
        ALT alleles carried in the window that were skipped: symbolic, and length-changing ones
        in a SNPs-only run.
    """

    individual: str
    chrom: str
    rec_pos: np.ndarray
    rec_ref: list
    rec_alt: list
    alleles: np.ndarray
    col: np.ndarray
    alt_k: np.ndarray
    pos: np.ndarray
    ref: list
    alt: list
    kind: list
    hap_mask: np.ndarray
    window_index: np.ndarray
    n_symbolic: int = 0
    n_not_snp: int = 0

    @property
    def n_variants(self) -> int:
        return int(self.col.shape[0])

    def variant_ids(self) -> list[str]:
        """``CHROM:POS:REF:ALT`` (POS 1-based), as :mod:`analysis.baselines` names variants."""
        return [f"{self.chrom}:{p}:{r}:{a}"
                for p, r, a in zip(self.pos.tolist(), self.ref, self.alt, strict=True)]

    def haplotype_labels(self) -> list[str]:
        return [{1: "0", 2: "1", 3: "0,1"}[int(m)] for m in self.hap_mask]


# ------------------------------------------------------------------------------- gene, people


def find_gene(tss_table: str | os.PathLike, gene: str, length: int,
              reverse_minus: bool = False) -> GeneWindow:
    """Look a gene up in a TSS table by id, else by :func:`hapflow.names.gene_key` (version
    suffix and case ignored), else by symbol (case ignored).

    Parameters
    ----------
    tss_table : path
        The study's ``[haplotypes] tss`` table (layouts in :mod:`prep.regions`).
    gene : str
        Gene id or symbol.
    length : int
        The model's window length L.
    reverse_minus : bool
        Whether the run's windows of minus-strand genes are reverse-complemented.

    Raises
    ------
    AttributionError
        The gene is not in the table, or its symbol names several genes.
    """
    genes = read_tss_table(tss_table)
    hit = genes.filter(pl.col("name") == gene)
    if hit.height == 0:
        key = gene_key(gene)
        hit = genes.filter(pl.col("name").map_elements(gene_key, return_dtype=pl.String) == key)
    if hit.height == 0:
        hit = genes.filter(pl.col("symbol").str.to_uppercase() == gene.upper())
    if hit.height == 0:
        some = ", ".join(f"{n} ({s})" if s else n for n, s in
                         zip(genes["name"].head(5), genes["symbol"].head(5), strict=True))
        raise AttributionError(
            f"gene {gene!r} is not in the TSS table {tss_table} ({genes.height} genes, e.g. "
            f"{some}); give an Ensembl id (version optional) or a symbol from that table")
    if hit.height > 1:
        raise AttributionError(
            f"{gene!r} names {hit.height} genes of {tss_table} "
            f"({', '.join(hit['name'].to_list())}): give the Ensembl id")
    row = hit.row(0, named=True)
    window_bounds(row["tss"], length)  # validates the length
    return GeneWindow(gene=row["name"], symbol=row["symbol"] or "", chrom=row["chrom"],
                      tss=int(row["tss"]), strand=row["strand"], length=int(length),
                      minus=bool(reverse_minus) and row["strand"] == "-")


def split_individuals(workdir: str | os.PathLike | Workdir, gene: str, split: str) -> list[str]:
    """The individuals of ``split`` for ``gene`` in the study's shards manifest, sorted."""
    path = Workdir(workdir).manifest
    if not path.exists():
        raise AttributionError(f"{path} does not exist: build the shards (python -m prep.shard) "
                               "or name the individuals with --individuals")
    m = pl.read_parquet(path, columns=["gene", "individual", "split"])
    rows = m.filter((pl.col("gene") == gene) & (pl.col("split") == split))
    if rows.height == 0:
        raise AttributionError(f"gene {gene} has no {split} individuals in {path}; name them "
                               "with --individuals or pick another --split")
    return sorted(rows["individual"].unique().to_list())


def check_individuals(vcf, individuals: list[str]) -> None:
    """Check that ``individuals`` is not empty, names no one twice and only samples of ``vcf``."""
    if not individuals:
        raise AttributionError("no individual to attribute: name at least one")
    dup = sorted({s for s in individuals if individuals.count(s) > 1})
    if dup:
        raise AttributionError(f"individual(s) named twice: {', '.join(dup)}")
    vcfs = VcfSet(vcf)
    known = set(vcfs.samples)
    missing = [s for s in individuals if s not in known]
    partial = [s for s in missing if s in vcfs.partial]
    if partial:
        raise AttributionError(
            f"individual(s) {', '.join(partial[:10])} are not in every file of "
            f"{vcfs.describe()} (e.g. {partial[0]} is missing from "
            f"{', '.join(p.name for p in vcfs.partial[partial[0]])}): the study's individuals "
            "are those in every file")
    if missing:
        raise AttributionError(
            f"individual(s) {', '.join(missing[:10])} are not samples of the VCF "
            f"{', '.join(str(f) for f in vcfs.files[:3])} ({len(known)} samples); check the "
            "names against `bcftools query -l`")


# ---------------------------------------------------------------------------------- variants


def read_variants(vcf, reference: str, individuals: list[str], window: GeneWindow,
                  hap: dict):
    """The individuals' VCF records over a span covering every base a reverted window can
    reach: the window's half length plus every base their carried alleles delete, plus a
    margin, on both sides of the TSS.

    Parameters
    ----------
    vcf : the study's VCF (a file, a list or a ``{chrom}`` pattern)
    hap : the run's haplotype settings (unphased, ref_mismatch, seed)

    Returns
    -------
    prep.variants.VariantBlock
        Sample ``s`` of ``individuals`` is haplotype rows ``2 * s`` and ``2 * s + 1``.
    """
    reader = VariantReader(vcf, individuals, unphased=hap.get("unphased", "error"),
                           seed=int(hap.get("seed", 0)))
    ref = Reference(reference)
    try:
        chrom = reader.resolve(window.chrom)
        reach = window.length // 2 + _MARGIN
        while True:
            lo, hi = max(window.tss - reach, 0), window.tss + reach
            block = reader.read(chrom, lo, hi, ref, hap.get("ref_mismatch", "error"))
            deleted = block.max_deletion()[None, :] * (block.hap_allele > 0)  # (2n, n_rec)
            need = window.length // 2 + int(deleted.sum(axis=1).max(initial=0)) + _MARGIN
            if need <= reach:
                return block
            reach = need
    finally:
        reader.close()
        ref.close()


def personal_variants(block, sample: int, individual: str, window: GeneWindow,
                      snps_only: bool) -> PersonalVariants:
    """The variants ``individual`` (row ``sample`` of ``block``) carries in ``window``.

    Parameters
    ----------
    block : prep.variants.VariantBlock
        Records of a span covering everything the reverted windows can reach.
    sample : int
        The individual's sample row in the block (haplotype rows ``2 * sample``, ``+ 1``).
    snps_only : bool
        The run's windows apply SNPs/MNPs only: length-changing ALTs are skipped (counted).
    """
    hap = block.hap_allele[2 * sample: 2 * sample + 2]  # (2, n_rec) int16
    rec = np.flatnonzero((hap > 0).any(axis=0))  # (R,) carried records, file order
    alleles = np.maximum(hap[:, rec], 0).astype(np.int16)  # (2, R)
    # (record column, ALT number) pairs carried on either haplotype, unique, in column order
    cols = np.concatenate([np.arange(rec.size), np.arange(rec.size)])
    ks = alleles.reshape(-1)
    carried = ks > 0
    pair = np.unique(cols[carried].astype(np.int64) * 65536 + ks[carried])
    col, k = pair // 65536, (pair % 65536).astype(np.int16)
    r = rec[col]
    allele_row = block.first_allele[r] + k - 1
    alt_len = np.diff(block.allele_offsets)[allele_row]
    ref_len = block.ref_len[r]
    in_window = (block.pos[r] >= window.start) & (block.pos[r] < window.end)
    symbolic = (block.allele_flags[allele_row] & SYMBOLIC) != 0
    not_snp = ~symbolic & (alt_len != ref_len)
    keep = in_window & ~symbolic & ~(not_snp & snps_only)
    n_symbolic = int((in_window & symbolic).sum())
    n_not_snp = int((in_window & not_snp).sum()) if snps_only else 0
    col, k, r = col[keep], k[keep], r[keep]
    alt_len, ref_len = alt_len[keep], ref_len[keep]
    mask = ((alleles[0, col] == k).astype(np.uint8) | ((alleles[1, col] == k) << 1)
            ).astype(np.uint8)
    kind = np.where((ref_len == 1) & (alt_len == 1), "snp",
                    np.where(ref_len == alt_len, "mnp", "indel")).tolist()
    index = _window_index(block, rec, alleles, col, mask, window, snps_only)
    return PersonalVariants(
        individual=individual, chrom=block.chrom, rec_pos=block.pos[rec].astype(np.int64),
        rec_ref=[block.ref_alleles[i] for i in rec.tolist()],
        rec_alt=[",".join(block.alt_alleles[i]) for i in rec.tolist()],
        alleles=alleles, col=col.astype(np.int64), alt_k=k,
        pos=(block.pos[r] + 1).astype(np.int64),
        ref=[block.ref_alleles[i] for i in r.tolist()],
        alt=[block.alt_alleles[i][j - 1] for i, j in zip(r.tolist(), k.tolist(), strict=True)],
        kind=kind, hap_mask=mask, window_index=index,
        n_symbolic=n_symbolic, n_not_snp=n_not_snp)


def _window_index(block, rec, alleles, col, mask, window: GeneWindow,
                  snps_only: bool) -> np.ndarray:
    """Window index of each variant's first base; -1 where a carried indel shifts it."""
    start = block.pos[rec]  # (R,) 0-based
    index = block.pos[rec[col]] - window.tss + window.length // 2  # (V,) forward window
    valid = (index >= 0) & (index < window.length)
    if not snps_only:
        # Records the haplotype carries a length-changing allele at: (2, R) bool
        k = alleles.astype(np.int64)
        row = block.first_allele[rec][None, :] + np.maximum(k, 1) - 1
        lengthy = (k > 0) & (np.diff(block.allele_offsets)[row] != block.ref_len[rec][None, :]) \
            & ((block.allele_flags[row] & SYMBOLIC) == 0)
        end = start + block.ref_len[rec]  # (R,) exclusive
        p = block.pos[rec[col]]  # (V,)
        lo = np.minimum(p, window.tss)[:, None]  # (V, 1)
        hi = np.maximum(p, window.tss)[:, None]
        # an indel whose REF span touches [lo, hi] moves bases between the variant and the TSS
        # (the variant's own indel too: it shifts its anchor relative to the centred TSS)
        touches = (start[None, :] <= hi) & (end[None, :] > lo)  # (V, R)
        for h in (0, 1):
            on_h = ((mask >> h) & 1).astype(bool)  # (V,)
            valid &= ~(on_h & (touches & lengthy[h][None, :]).any(axis=1))
    if window.minus:
        index = window.length - 1 - index
    return np.where(valid, index, -1).astype(np.int64)
