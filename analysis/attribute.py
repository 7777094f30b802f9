"""Variant attribution: in-silico mutagenesis over personal variants, ``python -m analysis.attribute``.

For one gene and one or more individuals, every variant an individual carries in the gene's
window is reverted to the reference allele, one at a time, and the fine-tuned model predicts the
reverted window: the variant's **effect** is ``prediction(personal) - prediction(reverted)``
(positive: the ALT allele raises predicted expression). For a set of individuals, variants are
ranked by how much of the variance of predictions across them they explain.

Example (the demo study, a run trained with ``python -m train.run``)::

    python -m analysis.attribute --config configs/demo.toml --workdir work/demo \\
        --run pairwise_regression --gene TANGO2 --split test --max-individuals 10
    python -m analysis.attribute --config configs/demo.toml --workdir work/demo \\
        --run pairwise_regression --gene ENSG00000183597 --individuals HG00096,HG00097

How windows are reverted. Windows are built exactly as the model's prediction windows are
(:func:`train.prediction.predict_vcf`): prep's engine on the study's ``[haplotypes]`` reference,
VCF and TSS table, with the run's haplotype settings (``DIR/runs/RUN/data.json``: SNPs only,
unphased and REF-mismatch policies, reverse-complemented minus-strand genes) and the model's
length L. A reverted window is the engine's window of a genotype in which that one variant's
ALT allele is replaced by REF on the haplotype(s) carrying it: the individual's resolved
(phased) genotypes at the records they carry are written to a small VCF with one pseudo-sample
per reversion, and the engine builds all of them in one call, as one ``(n, 2, L)`` uint8 batch
that the model reads in batches of ``batch_size`` on the device. So indels are reverted
exactly too (coordinates shift as the engine shifts them: a reverted deletion pushes flank back
out, a reverted insertion pulls flank in), and the engine's rules hold (a record skipped
because it overlaps a variant applies once that variant is reverted). Each individual's
unreverted pseudo-sample is checked byte for byte against the window built from the study's VCF.

Which variants. Records whose POS lies in the reference window ``[tss - L // 2, tss + L // 2)``
(0-based half-open, as :mod:`prep.dosages` and the elastic net use) at which the individual
carries an ALT allele; each ALT of a multi-allelic record is a variant of its own
(``CHROM:POS:REF:ALT``, POS 1-based). Symbolic alleles (never applied by the engine) and, for a
run trained on SNPs only, indels and other length-changing alleles (not in its windows) are
skipped and counted in the summary.

Ranking over a set of individuals (``GENE.variants.parquet``): with ``c[i, v]`` the effect of
variant v in individual i (0 where i does not carry it) and ``p[i]`` the personal predictions,

* ``variance_drop`` = ``(var(p) - var(p - c[:, v])) / var(p)``: the share of the variance of
  predictions across the set that disappears when v is reverted in everyone. ``p - c[:, v]`` is
  exactly each individual's reverted prediction, so this is exact, not a linear approximation;
  the ranking sorts on it.
* ``variance_share`` = ``cov(c[:, v], p) / var(p)``: an additive decomposition (the shares sum
  to 1 when the model is additive over variants).

Comparison with the elastic net (``DIR/predictions/elastic_net/weights.parquet``, from
``python -m analysis.baselines``): its per-allele weight of each variant is joined by variant id,
and the Pearson and Spearman correlations between the mean per-allele ISM effect and the EN
weight, over variants with a non-zero EN weight, go into the summary. Both are per ALT allele
and share their sign convention; their scales differ (the EN predicts the per-gene z-score).

Writes in ``DIR/attribution/RUN/`` (GENE = the gene id of the TSS table):

* ``GENE.parquet`` - one row per (individual, variant): gene, symbol, individual, variant,
  chrom, pos (1-based), ref, alt, kind (snp / mnp / indel), haplotypes ("0", "1" or "0,1"),
  dosage, offset_from_tss (POS - TSS, both 1-based reference coordinates), window_index (index
  of the variant's first base in the model's window; null where an indel the individual carries
  between it and the TSS shifts it), prediction (personal), prediction_reverted, effect;
  rows in the individuals' order, then by position;
* ``GENE.variants.parquet`` - one row per variant, ranked (see above), with en_weight and
  en_weight_per_allele where the elastic net has them;
* ``GENE.png`` - effect along the window (TSS marked), the EN weights below when present;
* ``GENE.json`` - summary: individuals, predictions, counts, EN correlation, top variants;
* ``GENE.config.toml`` - the resolved ``[haplotypes]`` and ``[attribute]`` settings.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hapflow.sections import AttributeConfig

log = logging.getLogger(__name__)

__all__ = [
    "AttributionError",
    "GeneWindow",
    "PersonalVariants",
    "find_gene",
    "read_variants",
    "personal_windows",
    "personal_variants",
    "reverted_windows",
    "predict_windows",
    "attribute_gene",
    "rank_variants",
    "compare_elastic_net",
    "plot_effects",
    "run_attribution",
    "main",
]

EFFECT_COLUMNS = ("gene", "symbol", "individual", "variant", "chrom", "pos", "ref", "alt", "kind",
                  "haplotypes", "dosage", "offset_from_tss", "window_index", "prediction",
                  "prediction_reverted", "effect")
"""Columns of ``GENE.parquet``, in order."""

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


def _strip_version(gene: str) -> str:
    return gene.split(".")[0] if gene.startswith("ENS") else gene


def find_gene(tss_table: str | Path, gene: str, length: int,
              reverse_minus: bool = False) -> GeneWindow:
    """Look a gene up in a TSS table by id (with or without version suffix) or symbol.

    Raises
    ------
    AttributionError
        The gene is not in the table, or its symbol names several genes.
    """
    import polars as pl

    from prep.regions import read_tss_table

    genes = read_tss_table(tss_table)
    hit = genes.filter(pl.col("name") == gene)
    if hit.height == 0:
        key = _strip_version(gene)
        hit = genes.filter(pl.col("name").map_elements(_strip_version, return_dtype=pl.String)
                           == key)
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
    from prep.dosages import window_bounds

    window_bounds(row["tss"], length)  # validates the length
    return GeneWindow(gene=row["name"], symbol=row["symbol"] or "", chrom=row["chrom"],
                      tss=int(row["tss"]), strand=row["strand"], length=int(length),
                      minus=bool(reverse_minus) and row["strand"] == "-")


def split_individuals(workdir: str | Path, gene: str, split: str) -> list[str]:
    """The individuals of ``split`` for ``gene`` in the study's shards manifest, sorted."""
    import polars as pl

    from hapflow.layout import Workdir

    path = Workdir(workdir).shards / "manifest.parquet"
    if not path.exists():
        raise AttributionError(f"{path} does not exist: build the shards (python -m prep.shard) "
                               "or name the individuals with --individuals")
    m = pl.read_parquet(path, columns=["gene", "individual", "split"])
    rows = m.filter((pl.col("gene") == gene) & (pl.col("split") == split))
    if rows.height == 0:
        raise AttributionError(f"gene {gene} has no {split} individuals in {path}; name them "
                               "with --individuals or pick another --split")
    return sorted(rows["individual"].unique().to_list())


def _check_individuals(vcf, individuals: list[str]) -> None:
    from prep.variants import VcfSet

    if not individuals:
        raise AttributionError("no individual to attribute: name at least one")
    dup = sorted({s for s in individuals if individuals.count(s) > 1})
    if dup:
        raise AttributionError(f"individual(s) named twice: {', '.join(dup)}")
    vcfs = VcfSet(vcf)
    known = set(vcfs.samples)
    missing = [s for s in individuals if s not in known]
    if missing:
        raise AttributionError(
            f"individual(s) {', '.join(missing[:10])} are not samples of the VCF "
            f"{', '.join(str(f) for f in vcfs.files[:3])} ({len(known)} samples); check the "
            "names against `bcftools query -l`")


# ------------------------------------------------------------------------- variants, windows


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
    from prep.variants import SYMBOLIC

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
    from prep.variants import SYMBOLIC

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


def _write_vcf(path: Path, pv: PersonalVariants, alleles: np.ndarray, contig_length: int,
               placeholder: tuple[int, str]) -> Path:
    """A bgzipped, indexed VCF of the individual's carried records, one pseudo-sample per row
    of ``alleles`` (shape (S, 2, R), int16), phased.

    With no record (R = 0) it holds one all-REF record at ``placeholder`` (0-based position,
    reference base), which the engine leaves untouched: tabix cannot index an empty file."""
    import pysam

    from hapflow.io import atomic_write_text

    n = alleles.shape[0]
    header = [
        "##fileformat=VCFv4.2",
        f"##contig=<ID={pv.chrom},length={contig_length}>",
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT"]
                  + [f"s{i}" for i in range(n)]),
    ]
    width = int(alleles.max(initial=0)) + 1
    text = np.array([str(i) for i in range(width)], dtype=object)
    gt = text[alleles[:, 0, :]] + "|" + text[alleles[:, 1, :]]  # (S, R) str
    lines = [f"{pv.chrom}\t{p + 1}\t.\t{r}\t{a}\t.\t.\t.\tGT\t" + "\t".join(gt[:, j])
             for j, (p, r, a) in enumerate(zip(pv.rec_pos.tolist(), pv.rec_ref, pv.rec_alt,
                                               strict=True))]
    if not lines:
        pos, base = placeholder
        alt = "C" if base == "A" else "A"
        lines = [f"{pv.chrom}\t{pos + 1}\t.\t{base}\t{alt}\t.\t.\t.\tGT\t"
                 + "\t".join(["0|0"] * n)]
    atomic_write_text(path, "\n".join(header + lines) + "\n")
    return Path(pysam.tabix_index(str(path), preset="vcf", force=True))


def reverted_windows(reference: str | Path, pv: PersonalVariants, window: GeneWindow,
                     revert: np.ndarray, *, snps_only: bool, tmpdir: str | Path) -> np.ndarray:
    """Windows of the individual with chosen variants reverted to the reference allele.

    Parameters
    ----------
    reference : FASTA path
    pv : PersonalVariants
        The individual's carried records and window variants.
    window : GeneWindow
    revert : np.ndarray, shape (S, V), bool
        Row s reverts the variants marked (on the haplotypes carrying them); an all-False row is
        the personal window, an all-True row the window with every listed variant reverted.
    snps_only : bool
        The run's engine setting.
    tmpdir : folder for the pseudo-sample VCF

    Returns
    -------
    np.ndarray, shape (S, 2, L), uint8
        Codes A, C, G, T, N = 0..4; reverse-complemented for a minus-strand gene when the run's
        windows are (TSS at ``window.tss_index``).
    """
    from prep.builder import HaplotypeBuilder
    from prep.reference import Reference

    revert = np.asarray(revert, dtype=bool)
    if revert.ndim != 2 or revert.shape[1] != pv.n_variants:
        raise ValueError(f"revert must have shape (S, {pv.n_variants}), got {revert.shape}")
    S = revert.shape[0]
    alleles = np.broadcast_to(pv.alleles, (S, *pv.alleles.shape)).copy()  # (S, 2, R)
    # haplotypes carrying each variant's ALT: (2, V); reverted where a row asks for it
    carried = pv.alleles[:, pv.col] == pv.alt_k[None, :]
    s, h, v = np.nonzero(revert[:, None, :] & carried[None, :, :])
    alleles[s, h, pv.col[v]] = 0
    from prep.encoding import decode

    ref = Reference(reference)
    try:
        contig_length = ref.length(window.chrom)
        base = decode(ref.fetch(window.chrom, window.tss, window.tss + 1))
    finally:
        ref.close()
    vcf = _write_vcf(Path(tmpdir) / f"{pv.individual}.vcf", pv, alleles, contig_length,
                     (window.tss, base))
    builder = HaplotypeBuilder(reference, vcf, None, snps_only=snps_only)
    try:
        res = builder.fixed(window.chrom, np.array([window.tss]), window.length,
                            np.array([window.minus]))
        return np.ascontiguousarray(res.seqs[0])  # (S, 2, L)
    finally:
        builder.close()


def predict_windows(model, seqs: np.ndarray, tss_index: int, device, precision: str = "fp32",
                    batch_size: int = 16, rc_average: bool = True) -> np.ndarray:
    """Model predictions for a batch of windows, ``batch_size`` at a time on the device.

    Parameters
    ----------
    seqs : np.ndarray, shape (N, 2, L), uint8
    tss_index : int
        TSS index in every window (0-based).

    Returns
    -------
    np.ndarray, shape (N,), float64 (computed in float32)
    """
    import torch

    from train.inference import predict_codes

    out = np.empty(seqs.shape[0], dtype=np.float64)
    for lo in range(0, seqs.shape[0], batch_size):
        part = torch.from_numpy(np.ascontiguousarray(seqs[lo:lo + batch_size]))
        pred = predict_codes(model, part, torch.full((part.shape[0],), int(tss_index)), device,
                             precision, rc_average)["prediction"]
        out[lo:lo + part.shape[0]] = pred.cpu().numpy()
    return out


# ------------------------------------------------------------------------------- one gene


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
    from prep.reference import Reference
    from prep.variants import VariantReader

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


def personal_windows(reference: str, vcf, individuals: list[str], window: GeneWindow,
                     hap: dict) -> np.ndarray:
    """The individuals' model windows built from the study's VCF (as train.predict builds them).

    Returns
    -------
    np.ndarray, shape (n_individuals, 2, L), uint8
    """
    from prep.builder import HaplotypeBuilder

    builder = HaplotypeBuilder(reference, vcf, individuals,
                               snps_only=bool(hap.get("snps_only")),
                               unphased=hap.get("unphased", "error"),
                               ref_mismatch=hap.get("ref_mismatch", "error"),
                               seed=int(hap.get("seed", 0)))
    try:
        res = builder.fixed(window.chrom, np.array([window.tss]), window.length,
                            np.array([window.minus]))
        return np.ascontiguousarray(res.seqs[0])
    finally:
        builder.close()


def attribute_gene(predictor, device, reference: str, vcf: str, window: GeneWindow,
                   individuals: list[str], batch_size: int = 16, rc_average: bool = True):
    """ISM over every personal variant of each individual in one gene's window.

    Parameters
    ----------
    predictor : train.prediction.Predictor
        The model (its ``haplotypes`` settings shape the windows).
    reference, vcf : FASTA and phased VCF of the study
    window : GeneWindow (``length`` = the model's L)
    individuals : VCF samples

    Returns
    -------
    (pl.DataFrame, dict)
        The effects table (:data:`EFFECT_COLUMNS`) and per-individual facts: ``prediction``
        (personal, float), ``n_variants``, ``n_indels``, ``n_symbolic``, ``n_not_snp``,
        ``window_variants`` (all ALT alleles carried in the window, skipped ones included).
    """
    import tempfile

    import polars as pl

    hap = predictor.haplotypes
    snps_only = bool(hap.get("snps_only"))
    block = read_variants(vcf, reference, individuals, window, hap)
    personal = personal_windows(reference, vcf, individuals, window, hap)  # (n, 2, L)
    frames, facts = [], {}
    with tempfile.TemporaryDirectory(prefix="hapflow-attribute-") as tmp:
        for s, ind in enumerate(individuals):
            pv = personal_variants(block, s, ind, window, snps_only)
            V = pv.n_variants
            revert = np.concatenate([np.zeros((1, V), bool), np.eye(V, dtype=bool)])
            seqs = reverted_windows(reference, pv, window, revert, snps_only=snps_only,
                                    tmpdir=tmp)  # (V + 1, 2, L)
            if not np.array_equal(seqs[0], personal[s]):
                raise AttributionError(
                    f"internal check failed: the rebuilt personal window of {ind} at "
                    f"{window.label} differs from the one built from {vcf}; please report it")
            pred = predict_windows(predictor.model, seqs, window.tss_index, device,
                                   predictor.precision, batch_size, rc_average)
            facts[ind] = {"prediction": float(pred[0]), "n_variants": V,
                          "n_indels": int(sum(k == "indel" for k in pv.kind)),
                          "n_symbolic": pv.n_symbolic, "n_not_snp": pv.n_not_snp,
                          "window_variants": V + pv.n_symbolic + pv.n_not_snp}
            frames.append(_effects_frame(window, pv, pred))
            log.info("%s, %s: %d variants in the window reverted one at a time; personal "
                     "prediction %.4g, largest |effect| %.3g", window.label, ind, V, pred[0],
                     float(np.abs(pred[0] - pred[1:]).max(initial=0.0)))
    table = pl.concat(frames, how="vertical") if frames else _effects_frame(window, None, None)
    return table, facts


def _effects_frame(window: GeneWindow, pv: PersonalVariants | None, pred):
    import polars as pl

    schema = {"gene": pl.String, "symbol": pl.String, "individual": pl.String,
              "variant": pl.String, "chrom": pl.String, "pos": pl.Int64, "ref": pl.String,
              "alt": pl.String, "kind": pl.String, "haplotypes": pl.String, "dosage": pl.Int8,
              "offset_from_tss": pl.Int64, "window_index": pl.Int64,
              "prediction": pl.Float64, "prediction_reverted": pl.Float64,
              "effect": pl.Float64}
    if pv is None:
        return pl.DataFrame(schema=schema)
    V = pv.n_variants
    dosage = (pv.hap_mask & 1) + (pv.hap_mask >> 1)
    index = pv.window_index
    return pl.DataFrame({
        "gene": [window.gene] * V, "symbol": [window.symbol] * V,
        "individual": [pv.individual] * V, "variant": pv.variant_ids(),
        "chrom": [pv.chrom] * V, "pos": pv.pos, "ref": pv.ref, "alt": pv.alt, "kind": pv.kind,
        "haplotypes": pv.haplotype_labels(), "dosage": dosage.astype(np.int8),
        "offset_from_tss": pv.pos - (window.tss + 1),
        "window_index": index,
        "prediction": np.full(V, pred[0]), "prediction_reverted": pred[1:],
        "effect": pred[0] - pred[1:],
    }, schema=schema).with_columns(
        window_index=pl.when(pl.col("window_index") >= 0).then(pl.col("window_index")),
    ).sort("pos", "ref", "alt", maintain_order=True)


# ------------------------------------------------------------------------ across individuals


def rank_variants(effects, predictions: dict[str, float]):
    """Rank the variants of a set of individuals by the prediction variance they explain.

    Parameters
    ----------
    effects : pl.DataFrame
        The effects table of :func:`attribute_gene`.
    predictions : dict individual -> personal prediction (every individual of the set, also
        those carrying no variant)

    Returns
    -------
    pl.DataFrame
        One row per variant: variant, chrom, pos, ref, alt, kind, n_individuals, n_carriers,
        allele_count, mean_effect (over carriers), mean_effect_per_allele, mean_abs_effect,
        dosage_variance, variance_drop, variance_share (null with fewer than two individuals
        or constant predictions), rank (1 = most variance explained; by mean |effect| when
        variance is undefined). See the module docstring for the formulas.
    """
    import polars as pl

    people = list(predictions)
    n = len(people)
    p = np.array([predictions[i] for i in people], dtype=np.float64)  # (n,)
    variants = (effects.group_by("variant", maintain_order=True)
                .agg(pl.col("chrom", "pos", "ref", "alt", "kind").first())
                .sort("pos", "ref", "alt", maintain_order=True))
    vid = {v: j for j, v in enumerate(variants["variant"].to_list())}
    row = {ind: i for i, ind in enumerate(people)}
    c = np.zeros((n, len(vid)))  # (n, n_var) effect, 0 where not carried
    dose = np.zeros((n, len(vid)))
    ii = np.array([row[i] for i in effects["individual"].to_list()], dtype=np.int64)
    jj = np.array([vid[v] for v in effects["variant"].to_list()], dtype=np.int64)
    c[ii, jj] = effects["effect"].to_numpy()
    dose[ii, jj] = effects["dosage"].to_numpy()
    carriers = (dose > 0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_effect = c.sum(axis=0) / carriers
        per_allele = np.where(dose > 0, c / np.where(dose > 0, dose, 1), 0.0).sum(0) / carriers
        mean_abs = np.abs(c).sum(axis=0) / carriers
    var_p = p.var() if n else 0.0
    defined = n >= 2 and var_p > 0
    if defined:
        drop = (var_p - (p[:, None] - c).var(axis=0)) / var_p
        share = ((c - c.mean(0)) * (p - p.mean())[:, None]).mean(axis=0) / var_p
        order = np.lexsort((np.arange(len(vid)), -mean_abs, -drop))
    else:
        drop = share = np.full(len(vid), np.nan)
        order = np.lexsort((np.arange(len(vid)), -mean_abs))
    rank = np.empty(len(vid), dtype=np.int64)
    rank[order] = np.arange(1, len(vid) + 1)
    return variants.with_columns(
        n_individuals=pl.lit(n, dtype=pl.Int64),
        n_carriers=pl.Series(carriers.astype(np.int64)),
        allele_count=pl.Series(dose.sum(axis=0).astype(np.int64)),
        mean_effect=pl.Series(mean_effect), mean_effect_per_allele=pl.Series(per_allele),
        mean_abs_effect=pl.Series(mean_abs),
        dosage_variance=pl.Series(dose.var(axis=0) if n else np.full(len(vid), np.nan)),
        variance_drop=pl.Series(drop, dtype=pl.Float64).fill_nan(None),
        variance_share=pl.Series(share, dtype=pl.Float64).fill_nan(None),
        rank=pl.Series(rank),
    ).sort("rank")


def compare_elastic_net(ranking, weights_path: str | Path, gene: str):
    """Join the elastic net's weights of ``gene`` to the variant ranking, by variant id.

    Parameters
    ----------
    ranking : pl.DataFrame from :func:`rank_variants`
    weights_path : ``DIR/predictions/elastic_net/weights.parquet`` (gene, variant, weight,
        weight_per_allele, ...; non-zero weights only)

    Returns
    -------
    (pl.DataFrame, dict or None)
        The ranking with columns en_weight and en_weight_per_allele (null where the EN has no
        non-zero weight), and ``{"weights": path, "n_en_variants", "n_shared", "pearson",
        "spearman"}`` (correlations of mean_effect_per_allele with en_weight_per_allele over
        shared variants; null with fewer than 3 or a constant side), or None without a file.
    """
    import polars as pl

    path = Path(weights_path)
    if not path.exists():
        return ranking.with_columns(en_weight=pl.lit(None, pl.Float64),
                                    en_weight_per_allele=pl.lit(None, pl.Float64)), None
    try:
        w = pl.read_parquet(path, columns=["gene", "variant", "weight", "weight_per_allele"])
    except Exception as err:  # polars raises several types on bad files
        raise AttributionError(f"cannot read elastic-net weights {path}: {err}") from None
    w = w.filter(pl.col("gene") == gene).select(
        "variant", en_weight="weight", en_weight_per_allele="weight_per_allele")
    joined = ranking.join(w, on="variant", how="left", maintain_order="left")
    shared = joined.filter(pl.col("en_weight_per_allele").is_not_null()
                           & pl.col("mean_effect_per_allele").is_not_nan())
    a = shared["mean_effect_per_allele"].to_numpy()
    b = shared["en_weight_per_allele"].to_numpy()
    stats = {"weights": str(path), "n_en_variants": w.height, "n_shared": shared.height,
             "pearson": None, "spearman": None}
    if shared.height >= 3 and np.ptp(a) > 0 and np.ptp(b) > 0:
        from scipy.stats import pearsonr, spearmanr

        stats["pearson"] = float(pearsonr(a, b).statistic)
        stats["spearman"] = float(spearmanr(a, b).statistic)
    return joined, stats


# ------------------------------------------------------------------------------------- plot


def plot_effects(effects, window: GeneWindow, path: str | Path, *, run: str = "",
                 ranking=None, top: int = 10, en_weights=None) -> None:
    """PNG of each variant's effect along the window (position vs effect, TSS marked).

    One colour per individual (legend up to 10), circles for SNPs/MNPs and triangles for
    indels; the ``top`` ranked variants of ``ranking`` are labelled. ``en_weights`` (a frame
    with pos (1-based) and weight_per_allele: the elastic net's non-zero weights of the gene)
    adds a second panel on the same axis. Written atomically.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hapflow.io import atomic_write_bytes

    en = None
    if en_weights is not None:
        en = en_weights.filter((en_weights["pos"] > window.start)
                               & (en_weights["pos"] <= window.end))
        en = en if en.height else None
    rows = 2 if en is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(10, 4 + 2.2 * (rows - 1)), sharex=True,
                             squeeze=False, height_ratios=[3, 1.4][:rows])
    ax = axes[0, 0]
    people = effects["individual"].unique(maintain_order=True).to_list()
    cmap = plt.get_cmap("tab10")
    for i, ind in enumerate(people):
        part = effects.filter(effects["individual"] == ind)
        indel = (part["kind"] == "indel").to_numpy()
        x, y = part["pos"].to_numpy(), part["effect"].to_numpy()
        colour = cmap(i % 10)
        ax.scatter(x[~indel], y[~indel], s=14, color=colour, alpha=0.8,
                   label=ind if len(people) <= 10 else None)
        ax.scatter(x[indel], y[indel], s=22, marker="^", color=colour, alpha=0.8)
    tss1 = window.tss + 1
    for a in axes[:, 0]:
        a.axvline(tss1, color="black", lw=0.8, ls="--")
        a.axhline(0, color="grey", lw=0.5)
    ax.text(tss1, 1.0, " TSS", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
    if ranking is not None and top and effects.height:
        best = ranking.head(top)
        # label each top variant at its largest |effect| among the individuals
        peak = (effects.sort(effects["effect"].abs(), descending=True, maintain_order=True)
                .unique("variant", keep="first", maintain_order=True))
        y_of = dict(zip(peak["variant"], peak["effect"], strict=True))
        for v, x in zip(best["variant"], best["pos"], strict=True):
            ax.annotate(v.split(":", 1)[1], (x, y_of.get(v, 0.0)), fontsize=6,
                        xytext=(2, 2), textcoords="offset points")
    if not effects.height:
        ax.text(0.5, 0.5, "no personal variant in the window", transform=ax.transAxes,
                ha="center", va="center")
    ax.set_xlim(window.start + 1, window.end)
    ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    ax.set_ylabel("effect (personal − reverted)")
    ax.set_title(f"{window.label}{', run ' + run if run else ''}: in-silico reversion of "
                 "personal variants", fontsize=10)
    if 0 < len(people) <= 10:
        ax.legend(fontsize=7, loc="lower right", ncol=min(len(people), 5))
    if en is not None:
        b = axes[1, 0]
        b.vlines(en["pos"].to_numpy(), 0, en["weight_per_allele"].to_numpy(), color="C3")
        b.set_ylabel("elastic net\nweight / allele", fontsize=8)
    axes[-1, 0].set_xlabel(f"position on {window.chrom} (1-based); window of "
                           f"{window.length:,} bp, gene on the {window.strand} strand")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


# -------------------------------------------------------------------------------- orchestrate


def _write_parquet(frame, path: Path) -> None:
    import io

    from hapflow.io import atomic_write_bytes

    buf = io.BytesIO()
    frame.write_parquet(buf, compression="zstd", statistics=False)
    atomic_write_bytes(path, buf.getvalue())


def _file_stem(gene: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in gene)


def run_attribution(config: str | Path, workdir: str | Path, run: str, gene: str, *,
                    individuals: list[str] | None = None, split: str | None = None,
                    overrides: dict | None = None) -> dict:
    """Attribute a gene's predictions to personal variants and write the outputs.

    Parameters
    ----------
    config : the study TOML (``[haplotypes]`` reference / vcf / tss, ``[attribute]``)
    workdir : the study folder (reads DIR/runs/RUN, DIR/shards, DIR/predictions/elastic_net;
        writes DIR/attribution/RUN)
    run : the fine-tuned run
    gene : gene id (version optional) or symbol of the TSS table
    individuals : VCF samples; default the gene's individuals of ``split``
    split : manifest split (default ``[attribute] split``); not with ``individuals``
    overrides : ``{"haplotypes": {...}, "attribute": {...}}``

    Returns
    -------
    dict : the summary written to ``GENE.json``
    """
    import json

    from hapflow.config import load_config, load_study, save_config
    from hapflow.io import atomic_write_text
    from hapflow.layout import Workdir
    from hapflow.sections import HaplotypesConfig
    from train.distributed import setup
    from train.prediction import load_predictor

    overrides = overrides or {}
    cfg = load_config(AttributeConfig, config, "attribute", overrides.get("attribute"))
    hcfg = load_config(HaplotypesConfig, config, "haplotypes", overrides.get("haplotypes"))
    for key in ("reference", "vcf", "tss"):
        if getattr(hcfg, key) is None:
            raise AttributionError(f"{config} [haplotypes] has no {key}: set it (or --set "
                                   f"haplotypes.{key}=PATH)")
    if individuals is not None and split is not None:
        raise AttributionError("give --individuals or --split, not both")
    layout = Workdir(workdir)
    d = setup(cfg.device)
    p = load_predictor(load_study(config, overrides), workdir, d.device, run=run)
    window = find_gene(hcfg.tss, gene, p.length, bool(p.haplotypes.get("reverse_minus")))
    if individuals is None:
        individuals = split_individuals(workdir, window.gene, split or cfg.split)
        if cfg.max_individuals and len(individuals) > cfg.max_individuals:
            log.info("Taking the first %d of the %d %s individuals of %s (max_individuals)",
                     cfg.max_individuals, len(individuals), split or cfg.split, window.label)
            individuals = individuals[:cfg.max_individuals]
    _check_individuals(hcfg.vcf, individuals)
    effects, facts = attribute_gene(p, d.device, hcfg.reference, hcfg.vcf, window, individuals,
                                    cfg.batch_size, cfg.rc_average)
    predictions = {i: facts[i]["prediction"] for i in individuals}
    ranking = rank_variants(effects, predictions)
    en_path = layout.predictions / "elastic_net" / "weights.parquet"
    ranking, en = compare_elastic_net(ranking, en_path, window.gene)

    out = layout.root / "attribution" / run
    stem = _file_stem(window.gene)
    files = {"effects": out / f"{stem}.parquet", "variants": out / f"{stem}.variants.parquet",
             "plot": out / f"{stem}.png", "summary": out / f"{stem}.json",
             "config": out / f"{stem}.config.toml"}
    _write_parquet(effects, files["effects"])
    _write_parquet(ranking, files["variants"])
    en_weights = None
    if en is not None:
        import polars as pl

        en_weights = pl.read_parquet(en_path, columns=["gene", "pos", "weight_per_allele"]
                                     ).filter(pl.col("gene") == window.gene)
    plot_effects(effects, window, files["plot"], run=run, ranking=ranking, top=min(cfg.top, 10),
                 en_weights=en_weights)
    save_config({"haplotypes": hcfg, "attribute": cfg}, files["config"])
    top = ranking.head(cfg.top).select("rank", "variant", "n_carriers", "mean_effect",
                                       "variance_drop", "variance_share")
    summary = {
        "gene": window.gene, "symbol": window.symbol, "chrom": window.chrom,
        "tss_1based": window.tss + 1, "strand": window.strand, "run": run,
        "length": window.length, "window_1based": [window.start + 1, window.end],
        "reverse_complemented": window.minus,
        "snps_only": bool(p.haplotypes.get("snps_only")),
        "individuals": individuals,
        "per_individual": facts,
        "variants": ranking.height,
        "reverted": effects.height,
        "indels_reverted": int((effects["kind"] == "indel").sum()),
        "skipped_symbolic": sum(f["n_symbolic"] for f in facts.values()),
        "skipped_not_snp": sum(f["n_not_snp"] for f in facts.values()),
        "prediction_variance": float(np.var(list(predictions.values()))),
        "elastic_net": en,
        "top_variants": top.to_dicts(),
        "files": {k: str(v) for k, v in files.items()},
    }
    atomic_write_text(files["summary"], json.dumps(summary, indent=1, allow_nan=False,
                                                   default=_json_default) + "\n")
    log.info("%s: %d individuals, %d (individual, variant) reversions (%d indels; skipped: %d "
             "symbolic, %d length-changing in a SNPs-only run), %d distinct variants",
             window.label, len(individuals), effects.height, summary["indels_reverted"],
             summary["skipped_symbolic"], summary["skipped_not_snp"], ranking.height)
    if en is not None:
        log.info("Elastic net: %d of its %d weighted variants are among them; r(ISM effect per "
                 "allele, EN weight per allele) = %s", en["n_shared"], en["n_en_variants"],
                 "n/a" if en["pearson"] is None else f"{en['pearson']:.3f}")
    log.info("Wrote %s (table), %s (ranking), %s (plot)", files["effects"], files["variants"],
             files["plot"])
    return summary


def _json_default(v):
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")


# ---------------------------------------------------------------------------------------- CLI


def parse_args(argv=None) -> argparse.Namespace:
    from hapflow.cli import add_common_arguments, make_parser

    p = make_parser("python -m analysis.attribute",
                    "In-silico mutagenesis over personal variants: the change in a fine-tuned "
                    "model's prediction when each variant an individual carries in a gene's "
                    "window is reverted to the reference allele; ranked over a set of "
                    "individuals and compared with the elastic net's weights.",
                    next_step="read DIR/attribution/RUN/GENE.parquet and GENE.png")
    add_common_arguments(p, ("haplotypes", "attribute"),
                         workdir_help="study folder (reads DIR/runs/RUN, writes "
                                      "DIR/attribution/RUN)")
    p.add_argument("--run", required=True, help="the fine-tuned run DIR/runs/RUN")
    p.add_argument("--gene", required=True, help="gene id (version optional) or symbol")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--individuals", help="comma-separated VCF samples")
    who.add_argument("--split", choices=("train", "val", "test"),
                     help="the gene's individuals of this split (default: [attribute] split)")
    p.add_argument("--max-individuals", type=int, metavar="N",
                   help="override [attribute] max_individuals (0: all of the split)")
    p.add_argument("--batch-size", type=int, metavar="N", help="override [attribute] batch_size")
    p.add_argument("--device", help="override [attribute] device (auto, cpu, cuda)")
    return p.parse_args(argv)


def _main(argv=None) -> int:
    args = parse_args(argv)
    from hapflow.cli import setup_logging

    setup_logging(args.quiet)
    from hapflow.config import load_study, split_overrides

    sets = split_overrides(args.set, ("haplotypes", "attribute"))
    for name in ("max_individuals", "batch_size", "device"):
        if getattr(args, name) is not None:
            sets["attribute"][name] = getattr(args, name)
    load_study(args.config, sets, need=("haplotypes", "attribute"))  # the whole file
    people = [s for s in args.individuals.split(",") if s] if args.individuals else None
    if args.individuals is not None and not people:
        raise AttributionError("--individuals names no individual")
    run_attribution(args.config, args.workdir, args.run, args.gene, individuals=people,
                    split=args.split, overrides=sets)
    return 0


def main(argv=None) -> int:
    """``python -m analysis.attribute``: see the module docstring; exit 2 on bad input."""
    from hapflow.cli import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
