"""In-silico mutagenesis: each personal variant reverted to the reference, and the model's
prediction of every reverted window.

The variant's **effect** is ``prediction(personal) - prediction(reverted)`` (positive: the ALT
allele raises predicted expression); :func:`attribute_gene` computes it for every variant each
individual carries in a gene's window (:mod:`analysis.personal_variants`).

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
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pysam
import torch

from analysis.personal_variants import (
    AttributionError,
    GeneWindow,
    PersonalVariants,
    personal_variants,
    read_variants,
)
from hapflow.io import atomic_write_text
from prep.builder import HaplotypeBuilder
from prep.encoding import decode
from prep.reference import Reference
from train.inference import predict_codes

log = logging.getLogger(__name__)

__all__ = [
    "EFFECT_COLUMNS",
    "personal_windows",
    "reverted_windows",
    "predict_windows",
    "attribute_gene",
]

EFFECT_COLUMNS = ("gene", "symbol", "individual", "variant", "chrom", "pos", "ref", "alt", "kind",
                  "haplotypes", "dosage", "offset_from_tss", "window_index", "prediction",
                  "prediction_reverted", "effect")
"""Columns of ``GENE.parquet``, in order."""


def personal_windows(reference: str, vcf, individuals: list[str], window: GeneWindow,
                     hap: dict) -> np.ndarray:
    """The individuals' model windows built from the study's VCF (as train.predict builds them).

    Returns
    -------
    np.ndarray, shape (n_individuals, 2, L), uint8
    """
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


def _write_vcf(path: Path, pv: PersonalVariants, alleles: np.ndarray, contig_length: int,
               placeholder: tuple[int, str]) -> Path:
    """A bgzipped, indexed VCF of the individual's carried records, one pseudo-sample per row
    of ``alleles`` (shape (S, 2, R), int16), phased.

    With no record (R = 0) it holds one all-REF record at ``placeholder`` (0-based position,
    reference base), which the engine leaves untouched: tabix cannot index an empty file."""
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
    revert = np.asarray(revert, dtype=bool)
    if revert.ndim != 2 or revert.shape[1] != pv.n_variants:
        raise ValueError(f"revert must have shape (S, {pv.n_variants}), got {revert.shape}")
    S = revert.shape[0]
    alleles = np.broadcast_to(pv.alleles, (S, *pv.alleles.shape)).copy()  # (S, 2, R)
    # haplotypes carrying each variant's ALT: (2, V); reverted where a row asks for it
    carried = pv.alleles[:, pv.col] == pv.alt_k[None, :]
    s, h, v = np.nonzero(revert[:, None, :] & carried[None, :, :])
    alleles[s, h, pv.col[v]] = 0
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
    out = np.empty(seqs.shape[0], dtype=np.float64)
    for lo in range(0, seqs.shape[0], batch_size):
        part = torch.from_numpy(np.ascontiguousarray(seqs[lo:lo + batch_size]))
        pred = predict_codes(model, part, torch.full((part.shape[0],), int(tss_index)), device,
                             precision, rc_average)["prediction"]
        out[lo:lo + part.shape[0]] = pred.cpu().numpy()
    return out


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


def _effects_frame(window: GeneWindow, pv: PersonalVariants | None, pred) -> pl.DataFrame:
    """One individual's rows of the effects table (:data:`EFFECT_COLUMNS`); ``pred`` (V + 1,):
    the personal prediction, then each variant's reverted one. Without ``pv``: no rows."""
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
